//! The `inventory` op: local users (uid 0 and uid >= UID_MIN) with their
//! password state (never the hash), sudo, keys, and sshd's effective
//! settings. A part that cannot be read is reported in place (`keys_error`,
//! `sshd_error`) instead of failing the whole report.

use serde_json::{json, Value};

use crate::accounts;
use crate::error::Result;
use crate::names::UserName;
use crate::ssh::{authkeys, sshd};
use crate::sys::System;

pub fn collect(sys: &System, opts: &sshd::SshdOptions) -> Result<Value> {
    let mut users = Vec::new();
    for u in accounts::list_users(sys)? {
        let mut entry = serde_json::to_value(&u).expect("a summary serializes");
        match UserName::parse(&u.record.name) {
            Ok(name) => match authkeys::list_keys(sys, &name) {
                Ok(keys) => entry["keys"] = json!(keys),
                Err(e) => {
                    entry["keys"] = json!([]);
                    entry["keys_error"] = json!(e.to_string());
                }
            },
            // Names the agent cannot manage are still listed, without keys.
            Err(_) => entry["keys"] = json!([]),
        }
        users.push(entry);
    }
    let mut data = json!({ "users": users });
    match sshd::effective(sys, opts) {
        Ok(eff) => data["sshd"] = json!(eff),
        Err(e) => {
            data["sshd"] = Value::Null;
            data["sshd_error"] = json!(e.to_string());
        }
    }
    Ok(data)
}
