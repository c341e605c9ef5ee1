//! Launching Flink: the JobManager (and starting it again after it died), the TaskManagers' shared launch line
//! (from Flink's BashJavaUtils, as its scripts do) and each TaskManager started from it, plus the Java plumbing
//! the other launchers share (classpath, log flags, spawning a recorded command line, the plugin environment).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::shield::start_agent;
use super::wait::wait_ready;
use super::{config, dist, io, isolate, say, Error, Launch, Result, RunState, TmInfo};
use crate::flink;
use crate::host::process::{self, Recorded};

/// `lib/*.jar` sorted, flink-dist last: the classpath Flink's own scripts build.
pub(super) fn flink_classpath(flink_home: &Path) -> Result<String> {
    let lib = flink_home.join("lib");
    let mut jars: Vec<PathBuf> = std::fs::read_dir(&lib)
        .map_err(io(&lib))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jar"))
        .collect();
    jars.sort();
    let (dist, rest): (Vec<PathBuf>, Vec<PathBuf>) = jars.into_iter().partition(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("flink-dist"))
    });
    Ok(rest
        .iter()
        .chain(dist.iter())
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":"))
}

/// Runs Flink's BashJavaUtils (what the launch scripts do) to turn the memory configuration into JVM flags and
/// dynamic properties. Returns (jvm args, dynamic args).
async fn bash_java_utils(
    state: &RunState,
    flink_home: &Path,
    classpath: &str,
    command: &str,
) -> Result<(Vec<String>, Vec<String>)> {
    let cp = format!(
        "{classpath}:{}",
        flink_home.join("bin/bash-java-utils.jar").display()
    );
    let out = tokio::process::Command::new("java")
        .args([
            "-Xmx128m",
            "-cp",
            &cp,
            "org.apache.flink.runtime.util.bash.BashJavaUtils",
            command,
            "--configDir",
        ])
        .arg(state.conf_dir())
        .output()
        .await
        .map_err(io(flink_home))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let results: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("BASH_JAVA_UTILS_EXEC_RESULT:"))
        .collect();
    if !out.status.success() || results.len() < 2 {
        return Err(Error::Exited {
            component: format!("BashJavaUtils {command}"),
            log: state.conf_dir().join("config.yaml"),
            tail: format!(
                "{}\n{}",
                text.lines().rev().take(10).collect::<Vec<_>>().join("\n"),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    let split = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    Ok((
        split(results[results.len() - 2]),
        split(results[results.len() - 1]),
    ))
}

pub(super) fn log_args(log: &Path, conf: &Path) -> Vec<String> {
    vec![
        format!("-Dlog.file={}", log.display()),
        format!(
            "-Dlog4j.configuration=file:{}/log4j.properties",
            conf.display()
        ),
        format!(
            "-Dlog4j.configurationFile=file:{}/log4j.properties",
            conf.display()
        ),
    ]
}

/// Starts a recorded Java command line as `name` (logs in `<run>/logs/<name>.log` and `.out`).
pub(super) fn spawn_java(
    state: &RunState,
    name: &str,
    launch: Launch,
    cwd: &Path,
    env: Vec<(String, String)>,
) -> Result<Recorded> {
    let logs = state.logs_dir();
    Ok(process::spawn(process::Spec {
        name,
        program: Path::new("java"),
        args: launch.java_args,
        cwd,
        log: logs.join(format!("{name}.log")),
        out: logs.join(format!("{name}.out")),
        env,
        cgroup: None,
        exact: None,
    })?)
}

/// Environment that points a Flink process at its plugin directory and its agent (shield profile).
fn plugin_env(state: &RunState, resource_id: &str, role: &str) -> Vec<(String, String)> {
    let Some(plugins) = &state.plugins_dir else {
        return Vec::new();
    };
    let mut env = vec![(
        "FLINK_PLUGINS_DIR".to_string(),
        plugins.display().to_string(),
    )];
    if let Some(a) = state.agents.iter().find(|a| a.resource_id == resource_id) {
        env.push(("STREAMSHIELD_AGENT_ADDRESS".into(), a.plugin.clone()));
        env.push(("STREAMSHIELD_RESOURCE_ID".into(), resource_id.into()));
        env.push(("STREAMSHIELD_ROLE".into(), role.into()));
    }
    env
}

/// StreamShield key: the JobManager's ZooKeeper session time-out (see `start_jobmanager`).
pub const JM_ZK_SESSION_KEY: &str = "streamshield.jobmanager.zookeeper-session-timeout";

pub(super) async fn start_jobmanager(
    state: &mut RunState,
    flink_home: &Path,
    classpath: &str,
    java_opts: &[String],
    flink_conf: &str,
) -> Result<()> {
    let (jvm, dynamic) =
        bash_java_utils(state, flink_home, classpath, "GET_JM_RESOURCE_PARAMS").await?;
    let conf = state.conf_dir();
    let log = state.logs_dir().join("jobmanager.log");
    let mut args = jvm;
    args.extend(java_opts.iter().cloned());
    args.extend(log_args(&log, &conf));
    args.extend(["-classpath".into(), classpath.to_string()]);
    args.push("org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint".into());
    args.extend(["--configDir".into(), conf.display().to_string()]);
    args.extend(dynamic);
    // With ZooKeeper high availability a new JobManager becomes leader only once the dead one's ZooKeeper session
    // has expired; the profile can give the JobManager alone a shorter session than the TaskManagers' GC-safe one.
    if let Some(t) = config::lookup(flink_conf, JM_ZK_SESSION_KEY) {
        args.extend([
            "-D".into(),
            format!("high-availability.zookeeper.client.session-timeout={t}"),
        ]);
    }
    say(format!(
        "starting the Flink {} JobManager (REST http://127.0.0.1:{})",
        dist::FLINK_VERSION,
        state.ports.rest
    ));
    state.jm_launch = Some(Launch {
        java_args: args,
        main_args: Vec::new(),
    });
    run_jobmanager(
        state,
        "the JobManager's REST endpoint answering",
        Duration::from_millis(250),
    )
    .await
}

/// Starts the JobManager with the run's recorded command line, records it (its log is appended to) and waits up to
/// 120 s, asking every `every`, until its REST endpoint answers (`what` names that wait in a time-out).
async fn run_jobmanager(state: &mut RunState, what: &str, every: Duration) -> Result<()> {
    let launch = state.jm_launch.clone().ok_or_else(|| {
        Error::Invalid("this run has no JobManager launch line (was `up` interrupted?)".into())
    })?;
    let env = plugin_env(state, "jobmanager", "jm");
    let rec = spawn_java(state, "jobmanager", launch, &state.run_dir, env)?;
    state.jobmanager = Some(rec.clone());
    state.save()?;
    let client = flink::Client::new(state.rest_url());
    wait_ready(&rec, what, Duration::from_secs(120), every, || {
        client.ready()
    })
    .await
}

/// Starts the JobManager again after it died (the drill's `jm-kill`); returns once its REST endpoint answers.
/// Whether the job comes back depends on the profile's high-availability settings.
pub async fn restart_jobmanager(state: &mut RunState) -> Result<()> {
    if state.jobmanager.as_ref().is_some_and(|p| p.alive()) {
        return Err(Error::Invalid("the JobManager is still running".into()));
    }
    run_jobmanager(
        state,
        "the restarted JobManager's REST endpoint answering",
        Duration::from_millis(100),
    )
    .await
}

pub(super) async fn tm_launch(
    state: &RunState,
    flink_home: &Path,
    classpath: &str,
    java_opts: &[String],
) -> Result<Launch> {
    let (jvm, dynamic) =
        bash_java_utils(state, flink_home, classpath, "GET_TM_RESOURCE_PARAMS").await?;
    let mut java_args = jvm;
    java_args.extend(java_opts.iter().cloned());
    java_args.extend([
        format!(
            "-Dlog4j.configuration=file:{}/log4j.properties",
            state.conf_dir().display()
        ),
        format!(
            "-Dlog4j.configurationFile=file:{}/log4j.properties",
            state.conf_dir().display()
        ),
        "-classpath".into(),
        classpath.to_string(),
    ]);
    let mut main_args = vec![
        "org.apache.flink.runtime.taskexecutor.TaskManagerRunner".to_string(),
        "--configDir".into(),
        state.conf_dir().display().to_string(),
    ];
    main_args.extend(dynamic);
    Ok(Launch {
        java_args,
        main_args,
    })
}

/// Starts TaskManager `name` (also its resource id) with the run's recorded launch line, and records it. With the
/// shield profile its agent is started first.
pub async fn start_taskmanager(state: &mut RunState, name: &str, role: &str) -> Result<()> {
    let cgroup = match &state.isolation {
        Some(group) => Some(isolate::member(group, name)?),
        None => None,
    };
    if state.shielded() {
        start_agent(state, name, "tm", cgroup.clone()).await?;
    }

    let launch = state.tm_launch.clone().ok_or_else(|| {
        Error::Invalid("this run has no TaskManager launch line (was `up` interrupted?)".into())
    })?;
    let log = state.logs_dir().join(format!("{name}.log"));
    let workdir = state.run_dir.join("flink").join(name);
    std::fs::create_dir_all(&workdir).map_err(io(&workdir))?;
    let mut args = launch.java_args.clone();
    args.push(format!("-Dlog.file={}", log.display()));
    args.extend(launch.main_args.iter().cloned());
    args.extend([
        "-D".into(),
        format!("taskmanager.resource-id={name}"),
        "-D".into(),
        format!("process.taskmanager.working-dir={}", workdir.display()),
    ]);
    say(format!(
        "starting TaskManager {name} ({role}, {} slots)",
        state.slots
    ));
    let out = state.logs_dir().join(format!("{name}.out"));
    let env = plugin_env(state, name, "tm");
    let rec = process::spawn(process::Spec {
        name,
        program: Path::new("java"),
        args,
        cwd: &state.run_dir,
        log,
        out,
        env,
        cgroup,
        exact: None,
    })?;
    state.taskmanagers.retain(|t| t.resource_id != name);
    state.taskmanagers.push(TmInfo {
        resource_id: name.to_string(),
        role: role.to_string(),
        process: rec,
    });
    state.save()
}
