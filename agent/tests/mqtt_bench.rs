//! Not a test: the fleet benchmark that `scripts/bench-mqtt` runs (it is
//! `#[ignore]`d, and prints figures instead of asserting them).
//!
//! N simulated agents — the library's real transport (persistent session,
//! manual acks, durable pending markers), each with its own state directory
//! and the stand-in apply loop that writes its result to the outbox — are
//! connected to one local mosquitto. It prints the memory each agent
//! connection costs (this process's RSS growth / N, and mosquitto's), then
//! how many commands per second make the full trip: control plane → broker →
//! agent → outbox → broker → control plane.

mod mqtt_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mqtt_support::*;

fn rss_kib(pid: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|v| v.trim().parse().expect("a number"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run scripts/bench-mqtt"]
async fn bench_mqtt_fleet() {
    let counts = env_list("BENCH_MQTT_AGENTS", "100,500,1000");
    let rounds = env_list("BENCH_MQTT_ROUNDS", "5")[0];
    let t = tempfile::tempdir().unwrap();
    // scripts/bench-mqtt prints the header and runs one N per process, so
    // that memory freed by an earlier run cannot hide a later run's growth.
    for (run, &n) in counts.iter().enumerate() {
        let dir = t.path().join(format!("run{run}"));
        let broker = Broker::start_with(&dir.join("broker"), None, false).expect("mosquitto");
        let broker_pid = broker.pid().unwrap().to_string();
        let mut cp = ControlPlane::connect(broker.port, &format!("bench-cp-{run}")).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (rss0, brss0) = (rss_kib("self"), rss_kib(&broker_pid));

        let mut handles = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let id = format!("i-bench-{run}-{i:05}");
            let state = dir.join("agents").join(&id);
            std::fs::create_dir_all(&state).unwrap();
            let cfg = agent_config(&dir, &broker.url(false), &id);
            let state_dir = accessd::state_dir::StateDir::open(&state).unwrap();
            let (rx, handle) =
                accessd::mqtt::spawn(&cfg, &id, &state_dir, 64 * 1024, fast_backoff()).unwrap();
            tokio::spawn(apply_loop(
                rx,
                state,
                Arc::new(Mutex::new(Applied::default())),
            ));
            handles.push(handle);
            ids.push(id);
        }
        for h in &mut handles {
            tokio::time::timeout(PATIENCE, h.wait_for(|s| s.subscribed))
                .await
                .expect("every agent subscribes");
        }
        // Let allocator and broker settle before measuring.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (rss1, brss1) = (rss_kib("self"), rss_kib(&broker_pid));

        let total = n * rounds;
        let start = Instant::now();
        for r in 0..rounds {
            for id in &ids {
                cp.send(id, command(&format!("{id}-{r}"))).await;
            }
        }
        let mut got = 0;
        while got < total {
            let (_, res) = cp.next_result().await;
            assert_eq!(res["status"], "ok", "{res}");
            got += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{n:>6}  {:>14.1}  {:>15.1}  {total:>8}  {secs:>7.2}  {:>10.0}",
            (rss1.saturating_sub(rss0)) as f64 / n as f64,
            (brss1.saturating_sub(brss0)) as f64 / n as f64,
            total as f64 / secs
        );
        for h in handles {
            h.shutdown().await;
        }
        drop(cp);
        drop(broker);
    }
}
