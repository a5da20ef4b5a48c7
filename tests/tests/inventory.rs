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

    // Exactly the local users: uid 0 and uid >= UID_MIN (1000 on Debian).
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
            (uid == 0 || uid >= 1000).then(|| f[0].to_string())
        })
        .collect();
    assert_eq!(listed, expected);

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
