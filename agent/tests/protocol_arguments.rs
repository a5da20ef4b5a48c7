//! Hostile arguments inside a correctly signed command (issue 12, items 7–9):
//! a password object's keys and values are never echoed, crypt hashes are
//! accepted only within the documented cost bounds, and a key given twice
//! anywhere in the payload is refused like a top-level one. Each case goes
//! through the whole engine, so the result envelope and the message the log
//! gets are what is checked, and nothing on disk may change.

mod protocol_support;

use accessd::engine::Status;
use accessd::error::Code;
use protocol_support::*;

/// What a careless control plane might put where a password belongs. Every
/// case contains the marker; none may come back.
const SECRET: &str = "Hunter2-Secret";

fn rig() -> Option<Rig> {
    require(
        is_root(),
        "root (the engine chowns its state and reads a copied /etc)",
    )
    .then(|| {
        let rig = Rig::new();
        // The engine makes its state directories once; snapshots start after.
        drop(rig.engine());
        rig
    })
}

/// Handle `args_json` for `op` and return (code, status, everything a
/// reader of the result or the log could see).
fn handle_raw(rig: &Rig, id: &str, op: &str, args_json: &str) -> (Code, Status, String) {
    let mut e = rig.engine();
    let agent = agent_key(&e);
    let h = e.handle(&rig.signed_raw(id, op, args_json));
    let p = payload(&agent, &h);
    let seen = format!(
        "{} | {} | {}",
        h.message,
        serde_json::to_string(&p).unwrap(),
        String::from_utf8_lossy(&h.envelope)
    );
    (h.code, h.status, seen)
}

/// Malformed password objects whose *keys* carry the secret.
const KEY_CASES: &[&str] = &[
    r#"{"Hunter2-Secret": 5}"#,
    r#"{"Hunter2-Secret": "x"}"#,
    r#"{"Hunter2-Secret": null}"#,
    r#"{"Hunter2-Secret": {"a": 1}}"#,
    r#"{"Hunter2-Secret": ["x"]}"#,
    r#"{"Hunter2-Secret": true}"#,
    r#"{"sealed": "AAAA", "Hunter2-Secret": "x"}"#,
    r#"{"Hunter2-Secret": 1, "crypt": "x"}"#,
    r#"{"sealed": {"Hunter2-Secret": 1}}"#,
    r#"{"crypt": {"Hunter2-Secret": "x"}}"#,
    r#"{"Hunter2-Secret": 1, "Hunter2-Secret": 2}"#,
    r#"{"sealed": {"Hunter2-Secret": 1, "Hunter2-Secret": 2}}"#,
    r#"{"Hunter2-Secret\u0000": 5}"#,
    r#"{"\u0048unter2-Secret": 5}"#,
];

/// Malformed password objects whose *values* carry the secret.
const VALUE_CASES: &[&str] = &[
    r#""Hunter2-Secret""#,
    r#"["Hunter2-Secret"]"#,
    r#"{"sealed": "Hunter2-Secret"}"#,
    r#"{"sealed": "Hunter2-Secret!"}"#,
    r#"{"sealed": ["Hunter2-Secret"]}"#,
    r#"{"crypt": "Hunter2-Secret"}"#,
    r#"{"crypt": ["Hunter2-Secret"]}"#,
    r#"{"crypt": "$6$Hunter2-Secret$x"}"#,
    r#"{"crypt": "$6$saltsalt$Hunter2-Secret"}"#,
    r#"{"crypt": "$y$Hunter2-Secret$x$y"}"#,
    r#"{"crypt": "Hunter2-Secret:x"}"#,
    r#"{"plain": "Hunter2-Secret"}"#,
    r#"{"sealed": "Hunter2-Secret", "crypt": "Hunter2-Secret"}"#,
    r#"{"crypt": "x", "crypt": "Hunter2-Secret"}"#,
    r#"{"crypt": "Hunter2-Secret", "crypt": "$6$saltsaltsaltsalt$O2HS/QLzw2LXNAuEEjzBCvpTtT4/qqIzkH/QWm9fEK8jpOPPP.cUucXonsJZdFdRiwQcmf6l9V6QcO14VJNDj1"}"#,
];

fn assert_never_echoed(cases: &[&str]) {
    let Some(rig) = rig() else { return };
    let before = rig.snapshot();
    for (i, pw) in cases.iter().enumerate() {
        for (op, args) in [
            (
                "set_password",
                format!(r#"{{"user": "root", "password": {pw}}}"#),
            ),
            (
                "set_password",
                format!(r#"{{"user": "root", "password": {pw}, "apply_at": "next_boot"}}"#),
            ),
            (
                "create_user",
                format!(r#"{{"user": "pwcase", "password": {pw}}}"#),
            ),
        ] {
            let (code, status, seen) = handle_raw(&rig, &format!("pw-{i}-{op}"), op, &args);
            assert_eq!(
                (code, status),
                (Code::InvalidCommand, Status::Rejected),
                "{op} with {pw}: {seen}"
            );
            // Also the escaped forms a JSON writer would produce.
            for needle in [SECRET, "Hunter2", "Secret", "unter2", r"\u0048"] {
                assert!(
                    !seen.contains(needle),
                    "{op} with {pw} echoes {needle:?}: {seen}"
                );
            }
        }
    }
    assert_unchanged(&before, &rig.snapshot(), "rejected commands");
}

#[test]
fn a_password_object_key_is_never_echoed() {
    assert_never_echoed(KEY_CASES);
}

#[test]
fn a_password_object_value_is_never_echoed() {
    assert_never_echoed(VALUE_CASES);
}

#[test]
fn a_key_given_twice_inside_args_is_refused_like_a_top_level_one() {
    let Some(rig) = rig() else { return };
    let before = rig.snapshot();
    for (i, (op, args)) in [
        // Last one would win: the agent would act on a user nobody reviewed.
        (
            "add_keys",
            format!(r#"{{"user": "root", "user": "nobody", "keys": ["{KEY1}"]}}"#),
        ),
        (
            "add_keys",
            format!(r#"{{"user": "root", "keys": ["{KEY1}"], "keys": ["{KEY2}"]}}"#),
        ),
        (
            "delete_user",
            r#"{"user": "pwcase", "remove_home": false, "remove_home": true}"#.into(),
        ),
        (
            "set_sshd",
            r#"{"password_authentication": false, "password_authentication": true}"#.into(),
        ),
        (
            "set_sshd",
            r#"{"permit_root_login": "no", "restart": false, "restart": true}"#.into(),
        ),
        // The same key spelled two ways is still the same key.
        (
            "set_sshd",
            r#"{"restart": false, "re\u0073tart": true, "permit_root_login": "no"}"#.into(),
        ),
        (
            "inventory",
            r#"{"users": ["root"], "users": ["root"]}"#.into(),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let (code, status, seen) = handle_raw(&rig, &format!("dup-{i}"), op, &args);
        assert_eq!(
            (code, status),
            (Code::InvalidCommand, Status::Rejected),
            "{op} {args}: {seen}"
        );
        assert!(seen.contains("twice"), "{op} {args}: says why: {seen}");
    }
    assert_unchanged(&before, &rig.snapshot(), "rejected commands");
}

#[test]
fn a_key_given_twice_anywhere_in_the_payload_is_refused() {
    use accessd::protocol::command::parse;
    let ok = r#"{"v":1,"id":"c-1","instance_id":"i","issued_at":"2026-11-29T18:00:00Z","expires_at":"2026-11-29T18:10:00Z","op":"set_sshd","args":{"permit_root_login":"no"}}"#;
    assert!(parse(ok.as_bytes()).is_ok());
    for bad in [
        // Top level (serde already refused these; the rule is one).
        ok.replace(r#""v":1,"#, r#""v":1,"v":1,"#),
        ok.replace(
            r#""op":"set_sshd","#,
            r#""op":"inventory","op":"set_sshd","#,
        ),
        // Inside args, and nested deeper.
        ok.replace(
            r#"{"permit_root_login":"no"}"#,
            r#"{"permit_root_login":"no","permit_root_login":"yes"}"#,
        ),
        ok.replace(
            r#"{"permit_root_login":"no"}"#,
            r#"{"permit_root_login":"no","x":{"a":[{"b":1,"b":2}]}}"#,
        ),
    ] {
        let e = parse(bad.as_bytes()).unwrap_err();
        assert_eq!(e.code(), Code::InvalidCommand, "{bad}");
        assert!(e.to_string().contains("twice"), "{bad}: {e}");
    }
    // Equal keys in different objects are not duplicates.
    let sibling = ok.replace(
        r#"{"permit_root_login":"no"}"#,
        r#"{"permit_root_login":"no","restart":false}"#,
    );
    assert!(parse(sibling.as_bytes()).is_ok());
}

/// Settings (or whole hashes) made by the system's libxcrypt, the library
/// PAM verifies with: `crypt_gensalt(prefix, count)`, and with `hash` the
/// full `crypt()` of a password under it.
fn libxcrypt(prefix: &str, count: u64, hash: bool) -> Option<String> {
    let script = r#"
import ctypes, sys
lc = ctypes.CDLL("libcrypt.so.1")
lc.crypt_gensalt.restype = ctypes.c_char_p
lc.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
lc.crypt.restype = ctypes.c_char_p
lc.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
s = lc.crypt_gensalt(sys.argv[1].encode(), int(sys.argv[2]), None, 0)
if s is None or s.startswith(b"*"):
    sys.exit(2)
print((lc.crypt(b"Corr3ct-Horse", s) if sys.argv[3] == "1" else s).decode())
"#;
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            script,
            prefix,
            &count.to_string(),
            if hash { "1" } else { "0" },
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).unwrap().trim().to_owned())
}

/// A syntactically complete `$y$` hash for a libxcrypt setting: the hash
/// part is never computed by the agent, so a fixed one stands for it
/// (computing cost 11 would take a second and a GiB).
fn yescrypt_with(setting: &str) -> String {
    format!("{setting}$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7")
}

fn crypt_code(rig: &Rig, id: &str, hash: &str) -> (Code, String) {
    let args =
        serde_json::json!({"user": "root", "password": {"crypt": hash}, "apply_at": "next_boot"});
    let (code, _, seen) = handle_raw(rig, id, "set_password", &args.to_string());
    (code, seen)
}

#[test]
fn a_crypt_hash_over_the_cost_bound_is_refused_without_quoting_it() {
    let Some(rig) = rig() else { return };
    if !require(
        libxcrypt("$y$", 5, false).is_some(),
        "python3 and libcrypt.so.1 (libxcrypt) as the oracle",
    ) {
        return;
    }
    let before = rig.snapshot();
    let salt = "saltsaltsaltsalt";
    let sha512_tail =
        "O2HS/QLzw2LXNAuEEjzBCvpTtT4/qqIzkH/QWm9fEK8jpOPPP.cUucXonsJZdFdRiwQcmf6l9V6QcO14VJNDj1";
    let sha256_tail = "X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7";
    let mut hostile = vec![
        // Minutes of CPU for every password attempt, by anyone who can reach sshd.
        format!("$6$rounds=999999999${salt}${sha512_tail}"),
        format!("$6$rounds=1000001${salt}${sha512_tail}"),
        format!("$5$rounds=999999999${salt}${sha256_tail}"),
        format!("$5$rounds=1000001${salt}${sha256_tail}"),
        // rounds written in a way libxcrypt would read differently.
        format!("$6$rounds=0001000${salt}${sha512_tail}"),
        format!("$6$rounds=+5000${salt}${sha512_tail}"),
        // yescrypt: N = 2^63, r huge, p/t/g/NROM extras, other flavours.
        yescrypt_with("$y$jzT$F5Jx5fExrKuPp53xLKQ..1"),
        yescrypt_with("$y$j9z$F5Jx5fExrKuPp53xLKQ..1"),
        yescrypt_with("$y$j9T5z$F5Jx5fExrKuPp53xLKQ..1"),
        yescrypt_with("$y$j9T/z$F5Jx5fExrKuPp53xLKQ..1"),
        yescrypt_with("$y$/9T$F5Jx5fExrKuPp53xLKQ..1"),
        yescrypt_with("$y$jj9T$F5Jx5fExrKuPp53xLKQ..1"),
        yescrypt_with("$y$j$F5Jx5fExrKuPp53xLKQ..1"),
        yescrypt_with(&format!("$y$j9T${}", "a".repeat(87))),
    ];
    // libxcrypt's own costs above the bound (9..=11: 256 MiB to 1 GiB a try).
    for cost in 9..=11 {
        hostile.push(yescrypt_with(&libxcrypt("$y$", cost, false).unwrap()));
    }
    for (i, h) in hostile.iter().enumerate() {
        let (code, seen) = crypt_code(&rig, &format!("cost-{i}"), h);
        assert_eq!(code, Code::InvalidCommand, "{h}: {seen}");
        let params = h.split('$').nth(2).unwrap();
        assert!(
            !seen.contains(h.as_str()) && !seen.contains(&format!("${params}$")),
            "the hash is quoted: {seen}"
        );
    }
    assert_unchanged(&before, &rig.snapshot(), "rejected commands");
}

#[test]
fn crypt_hashes_within_the_cost_bound_are_accepted_as_libxcrypt_makes_them() {
    let Some(rig) = rig() else { return };
    if !require(
        libxcrypt("$y$", 5, false).is_some(),
        "python3 and libcrypt.so.1 (libxcrypt) as the oracle",
    ) {
        return;
    }
    let mut good = Vec::new();
    // Real hashes: the default cost and the bound itself.
    for (prefix, count) in [
        ("$6$", 5000),
        ("$6$", 1_000_000),
        ("$5$", 1_000_000),
        ("$y$", 5),
    ] {
        good.push(libxcrypt(prefix, count, true).unwrap());
    }
    good.push(libxcrypt("$6$", 1000, true).unwrap());
    for cost in 1..=8 {
        good.push(yescrypt_with(&libxcrypt("$y$", cost, false).unwrap()));
    }
    for (i, h) in good.iter().enumerate() {
        let (code, seen) = crypt_code(&rig, &format!("within-{i}"), h);
        assert_eq!(code, Code::Ok, "{h}: {seen}");
    }
}
