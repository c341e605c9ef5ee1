//! Everything the binary prints for people (tables, reports); machine-readable output is the types' JSON.

use crate::coordinator::api::Cluster;
use crate::protocol::Role;

/// `local up` and `local status`.
pub fn local_status(s: &crate::local::Status) {
    println!("run dir   {}", s.run_dir.display());
    println!("profile   {}", s.profile);
    println!("flink     {} at {}", s.flink.version, s.flink.rest);
    println!(
        "kafka     {} at {} ({})",
        s.kafka.version,
        s.kafka.bootstrap,
        if s.kafka.alive {
            "running"
        } else {
            "not running"
        }
    );
    if let Some(jm) = &s.jobmanager {
        println!(
            "jobmgr    pid {} ({})",
            jm.pid,
            if jm.alive { "running" } else { "not running" }
        );
    }
    for t in &s.taskmanagers {
        println!(
            "{:<9} pid {:<8} {:<8} {}{}",
            t.resource_id,
            t.pid,
            t.role,
            if !t.alive {
                "not running"
            } else if t.stopped {
                "STOPPED (SIGSTOP)"
            } else if t.registered {
                "registered"
            } else {
                "not registered"
            },
            match (t.slots, t.free_slots) {
                (Some(n), Some(f)) => format!(", {f}/{n} slots free"),
                _ => String::new(),
            }
        );
    }
    for j in &s.jobs {
        println!("job       {} {} {}", j.id, j.name, j.state);
    }
    if let Some(c) = &s.coordinator {
        println!(
            "coord     pid {} ({}) API {}",
            c.pid,
            if c.alive { "running" } else { "not running" },
            c.api
        );
    }
    for a in &s.agents {
        println!(
            "agent     {:<10} pid {:<8} {} liveness {} {}",
            a.resource_id,
            a.pid,
            if a.alive { "running" } else { "NOT RUNNING" },
            a.liveness.as_deref().unwrap_or("?"),
            a.metrics_url
        );
    }
    for p in &s.problems {
        println!("problem   {p}");
    }
}

/// `workload verify`.
pub fn verify_report(r: &crate::workload::ledger::Report) {
    println!("runs               {}", r.runs.join(", "));
    println!("complete           {}", r.complete);
    println!("records in / out   {} / {}", r.records_in, r.records_out);
    println!("lost               {}", r.records_lost);
    println!("duplicated         {}", r.records_duplicated);
    println!("state errors       {}", r.state_errors);
    println!("input gaps         {}", r.input_gaps);
    println!("unexpected output  {}", r.records_unexpected);
    println!(
        "latency ms         p50 {} p90 {} p99 {} max {}",
        r.latency_ms.p50, r.latency_ms.p90, r.latency_ms.p99, r.latency_ms.max
    );
    println!(
        "throughput         {:.0} records/s (output, seconds with output)",
        r.throughput_out_per_s
    );
    for k in r.lost_per_key.iter().take(20) {
        println!(
            "lost in            run {} key {}: {} records from seq {}",
            k.run, k.key, k.lost, k.first_seq
        );
    }
}

/// `streamshield status`: the coordinator's view as a table.
pub fn cluster(c: &Cluster) {
    let f = &c.flink;
    println!(
        "coordinator  {} (epoch {})   flink {} ({})",
        c.mode,
        c.epoch,
        f.rest,
        if f.reachable {
            "reachable"
        } else {
            "UNREACHABLE"
        }
    );
    if let Some(p) = &f.cluster_policy {
        println!("cluster      {}", p.describe());
    }
    for j in &f.jobs {
        let policy = j
            .policy
            .as_ref()
            .map(|p| p.describe())
            .unwrap_or_else(|| "-".into());
        println!(
            "job          {} {} {} ({}/{} vertices running) on {}; {}",
            j.id,
            j.name,
            j.state,
            j.vertices_running,
            j.vertices,
            if j.taskmanagers.is_empty() {
                "-".to_string()
            } else {
                j.taskmanagers.join(", ")
            },
            policy
        );
    }
    println!(
        "{:<24} {:<8} {:<10} {:<16} {:<10} PID",
        "RESOURCE", "ROLE", "SLOTS", "AGENT", "LIVENESS"
    );
    for t in &c.taskmanagers {
        let slots = match &t.flink {
            Some(f) => format!("{}/{} free", f.free_slots, f.slots),
            None => "-".into(),
        };
        let (agent, liveness, pid) = match &t.agent {
            None => ("none".to_string(), "-".to_string(), "-".to_string()),
            Some(p) => (
                if p.connected {
                    p.agent.clone()
                } else {
                    format!("LOST {}", p.agent)
                },
                p.status
                    .as_ref()
                    .map_or("-".into(), |s| s.liveness.to_string()),
                p.status
                    .as_ref()
                    .and_then(|s| s.pid)
                    .map_or("-".into(), |p| p.to_string()),
            ),
        };
        println!(
            "{:<24} {:<8} {:<10} {:<16} {:<10} {}",
            t.resource_id, t.role, slots, agent, liveness, pid
        );
    }
    for p in c
        .processes
        .iter()
        .filter(|p| p.status.as_ref().is_some_and(|s| s.watches == Role::Jm))
    {
        println!(
            "jobmanager   agent {} {}  liveness {}  pid {}",
            p.agent,
            if p.connected { "connected" } else { "LOST" },
            p.status
                .as_ref()
                .map_or("-".into(), |s| s.liveness.to_string()),
            p.status
                .as_ref()
                .and_then(|s| s.pid)
                .map_or("-".into(), |p| p.to_string())
        );
    }
    for d in c.decisions.iter().take(5) {
        println!(
            "decision     #{} {} {}: {} [{}]",
            d.id,
            d.trigger,
            d.resource_id,
            d.action,
            d.mode.as_str()
        );
    }
}
