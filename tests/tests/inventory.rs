//! The `inventory` operation: what it reports must be what the instance's
//! own files and `sshd -T` say, and never a password hash.

use std::collections::BTreeSet;

use accessd_e2e::{sandbox, KeyKind, Value};

fn user<'a>(inventory: &'a Value, name: &str) -> &'a Value {
    inventory["users"]
        .as_array()
        .expect("data.users is a list")
        .iter()
        .find(|u| u["name"] == name)
        .unwrap_or_else(|| panic!("{name} missing from the inventory: {inventory}"))
}

fn fingerprints(user: &Value) -> BTreeSet<String> {
    user["keys"]
        .as_array()
        .expect("keys is a list")
        .iter()
        .map(|k| {
            k["fingerprint"]
                .as_str()
                .expect("a fingerprint")
                .to_string()
        })
        .collect()
}

#[test]
fn inventory_lists_users_keys_and_sshd_settings_as_the_files_say() {
    let Some(mut sb) = sandbox() else { return };
    sb.start_agent();
    let ed = sb.client_key("laptop", KeyKind::Ed25519);
    let rsa = sb.client_key("desktop", KeyKind::Rsa2048);
    let root_key = sb.client_key("root-admin", KeyKind::Ecdsa256);
    sb.cmd("create_user")
        .user("exampleuser")
        .args(["--sudo"])
        .password("Ex4mple-Passw0rd!")
        .keys(&[&ed, &rsa])
        .send()
        .assert_ok();
    sb.cmd("create_user").user("plainuser").send().assert_ok();
    sb.cmd("add_keys")
        .user("root")
        .keys(&[&root_key])
        .send()
        .assert_ok();
    sb.cmd("set_sshd")
        .args(["--password-auth", "no"])
        .send()
        .assert_ok();

    let r = sb.cmd("inventory").send();
    r.assert_ok();
    let inv = &r.payload["data"];

    let example = user(inv, "exampleuser");
    let pw = sb.passwd_entry("exampleuser").unwrap();
    assert_eq!(example["uid"].to_string(), pw[2]);
    assert_eq!(example["home"], pw[5].as_str());
    assert_eq!(example["shell"], pw[6].as_str());
    assert_eq!(example["sudo"], true);
    assert_eq!(example["password"], "set");
    assert_eq!(
        fingerprints(example),
        BTreeSet::from([ed.fingerprint.clone(), rsa.fingerprint.clone()]),
        "fingerprints as ssh-keygen -l prints them"
    );
    let plain = user(inv, "plainuser");
    assert_eq!(plain["sudo"], false);
    assert_eq!(plain["password"], "locked");
    assert!(fingerprints(plain).is_empty());
    assert_eq!(
        fingerprints(user(inv, "root")),
        BTreeSet::from([root_key.fingerprint.clone()])
    );

    // Exactly the users commands may name: uid 0 and UID_MIN..UID_MAX of
    // login.defs (1000..60000 on Debian; not nobody, 65534).
    let listed: BTreeSet<String> = inv["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = sb
        .read("/etc/passwd")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let uid: u32 = f.get(2)?.parse().ok()?;
            (uid == 0 || (1000..=60000).contains(&uid)).then(|| f[0].to_string())
        })
        .collect();
    assert_eq!(listed, expected);
    assert!(!listed.contains("nobody"), "a system account is listed");

    // sshd's effective settings, as sshd -T reports them.
    let sshd = &inv["sshd"];
    assert_eq!(sshd["password_authentication"], "no");
    for (ours, theirs) in [
        ("password_authentication", "passwordauthentication"),
        ("pubkey_authentication", "pubkeyauthentication"),
        ("permit_root_login", "permitrootlogin"),
    ] {
        assert_eq!(sshd[ours], sb.sshd_option(theirs).as_str(), "{ours}");
    }

    // Never a hash.
    let hash = &sb.shadow_entry("exampleuser").unwrap()[1];
    let text = r.payload.to_string();
    assert!(
        !text.contains(hash.as_str()) && !text.contains("$6$"),
        "a hash leaked: {text}"
    );
}

/// PROTOCOL §3/§4: a result never exceeds `max_result_bytes`; inventory is
/// cut at a whole user with data.truncated/next, and `accessctl sign
/// inventory --users ... --cursor NEXT` pages through exactly the named users.
#[test]
fn accessctl_pages_an_inventory_of_named_users_with_the_cursor() {
    let Some(mut sb) = sandbox() else { return };
    sb.start_agent();
    let names = ["pagea", "pageb", "pagec", "paged"];
    for (i, name) in names.iter().enumerate() {
        sb.useradd(name);
        let keys: Vec<_> = (0..10)
            .map(|k| sb.client_key(&format!("{name}-{i}-{k}"), KeyKind::Ed25519))
            .collect();
        let refs: Vec<_> = keys.iter().collect();
        sb.cmd("add_keys").user(name).keys(&refs).send().assert_ok();
    }
    // A small limit, so that four users with ten keys each need pages.
    let config = sb.read(accessd_e2e::AGENT_CONFIG);
    sb.write(
        accessd_e2e::AGENT_CONFIG,
        &config.replacen("[trust]", "max_result_bytes = 8192\n\n[trust]", 1),
        0o600,
    );
    sb.restart_agent();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut cmd = sb.cmd("inventory").args(["--users", &names.join(",")]);
        if let Some(c) = &cursor {
            cmd = cmd.args(["--cursor", c]);
        }
        let r = cmd.send();
        r.assert_ok();
        pages += 1;
        let text = r.payload.to_string();
        assert!(text.len() < 8192, "a {}-byte result payload", text.len());
        let data = &r.payload["data"];
        for u in data["users"].as_array().unwrap() {
            assert_eq!(u["keys_total"], 10, "{u}");
            assert_eq!(u["keys"].as_array().unwrap().len(), 10, "{u}");
            seen.push(u["name"].as_str().unwrap().to_string());
        }
        if data["truncated"] == true {
            cursor = Some(data["next"].as_str().expect("next with truncated").into());
        } else {
            assert!(data.get("next").is_none(), "{data}");
            break;
        }
        assert!(pages < 10, "{pages} pages for four users");
    }
    assert!(pages > 1, "four users x ten keys fit one 8 KiB page?");
    assert_eq!(seen, names, "each named user once, in uid order");
}
