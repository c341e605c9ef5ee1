//! A standalone Flink cluster as a user has one, for the tests and the benchmark of StreamShield attached to a
//! cluster it did not start: a Flink distribution unpacked into a temp dir (PyPI's wheels, scripts included),
//! configured by editing its conf/config.yaml, started and stopped with its own `bin/jobmanager.sh` and
//! `bin/taskmanager.sh`; `streamshield install` run on it, and the agent and coordinator started from the
//! configuration files install wrote. Nothing of `streamshield local` is used for the cluster.
//!
//! Everything it starts is stopped when the [`Standalone`] is dropped (test passed, failed or panicked): every
//! process whose command line names the temp dir, by pid (checked against its start time), then the dir.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::BIN;

/// A free TCP port on loopback (closed again; the caller binds it soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Runs `cmd`, echoing its command line and output into the test log.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    eprintln!(
        "$ {cmd:?}\n{}{}[{}]",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status
    );
    out
}

/// Polls `f` every 100 ms until it gives a value or `within` has passed.
pub fn wait_for<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < within,
            "waited {within:?} for {what} in vain"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One standalone cluster in a temp dir.
pub struct Standalone {
    pub version: String,
    /// The temp dir holding everything (Flink home, pid files, StreamShield's files, logs).
    pub root: PathBuf,
    /// FLINK_HOME.
    pub home: PathBuf,
    pub rest: String,
    pub pid_dir: PathBuf,
    /// Where agents reach the coordinator.
    pub coordinator_addr: String,
    pub agent_socket: PathBuf,
    /// `install --config-dir`.
    pub config_dir: PathBuf,
    http: reqwest::blocking::Client,
    daemons: Vec<(String, Child)>,
    tmp: Option<tempfile::TempDir>,
}

impl Standalone {
    /// A fresh cluster (not started) of Flink `version`, its configuration edited as an operator would: loopback
    /// addresses and free ports, one slot per TaskManager, small memory, pid files in the temp dir, and `keys`.
    pub fn new(version: &str, keys: &[(&str, &str)]) -> Standalone {
        let cache = streamshield::local::dist::cache_dir();
        let pristine = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(streamshield::local::home::ensure_flink_home(
                &cache, version,
            ))
            .unwrap_or_else(|e| panic!("a Flink {version} distribution: {e}"));
        let tmp = tempfile::Builder::new()
            .prefix("ss-attach-")
            .tempdir()
            .unwrap();
        let root = tmp.path().to_path_buf();
        let home = root.join("flink");
        streamshield::local::home::copy_home(&pristine, &home).unwrap();
        let pid_dir = root.join("pids");
        std::fs::create_dir_all(&pid_dir).unwrap();
        let rest_port = free_port();
        let coordinator_addr = format!("127.0.0.1:{}", free_port());
        let pid_dir_s = pid_dir.display().to_string();
        let rest_port_s = rest_port.to_string();
        let rpc_port = free_port().to_string();
        let mut all: Vec<(&str, &str)> = vec![
            ("jobmanager.rpc.address", "127.0.0.1"),
            ("jobmanager.rpc.port", &rpc_port),
            ("jobmanager.bind-host", "127.0.0.1"),
            ("rest.address", "127.0.0.1"),
            ("rest.bind-address", "127.0.0.1"),
            ("rest.port", &rest_port_s),
            ("taskmanager.bind-host", "127.0.0.1"),
            ("taskmanager.host", "127.0.0.1"),
            ("taskmanager.numberOfTaskSlots", "1"),
            ("taskmanager.memory.process.size", "1024m"),
            ("jobmanager.memory.process.size", "1024m"),
            ("env.pid.dir", &pid_dir_s),
        ];
        all.extend_from_slice(keys);
        let s = Standalone {
            version: version.to_string(),
            rest: format!("http://127.0.0.1:{rest_port}"),
            pid_dir,
            coordinator_addr,
            agent_socket: root.join("agent.sock"),
            config_dir: root.join("streamshield"),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            daemons: Vec::new(),
            home,
            root,
            tmp: Some(tmp),
        };
        s.set_flink_keys(&all);
        s
    }

    /// The configuration file Flink reads (1.20 and 2.x: conf/config.yaml, standard YAML).
    pub fn config_file(&self) -> PathBuf {
        self.home.join("conf/config.yaml")
    }

    /// Sets `keys` as flat top-level lines of conf/config.yaml, replacing the same flat key if present (a flat key
    /// wins over the distribution's nested default).
    pub fn set_flink_keys(&self, keys: &[(&str, &str)]) {
        let path = self.config_file();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| !keys.iter().any(|(k, _)| l.starts_with(&format!("{k}:"))))
            .map(str::to_string)
            .collect();
        for (k, v) in keys {
            lines.push(format!("{k}: {v}"));
        }
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    }

    /// `bin/<script> <args>` of the Flink home.
    pub fn script(&self, script: &str, args: &[&str]) -> Output {
        run(Command::new(self.home.join("bin").join(script))
            .args(args)
            .current_dir(&self.root))
    }

    /// `streamshield install` on this home, with the test's socket, coordinator address and config dir.
    pub fn install(&self, extra: &[&str]) -> Output {
        run(Command::new(BIN)
            .arg("install")
            .arg("--flink-home")
            .arg(&self.home)
            .arg("--agent-socket")
            .arg(&self.agent_socket)
            .arg("--coordinator")
            .arg(&self.coordinator_addr)
            .arg("--config-dir")
            .arg(&self.config_dir)
            .args(extra))
    }

    /// Starts the coordinator and then one agent from the files install wrote (only their HTTP ports are moved
    /// off the defaults, so that tests can run beside each other); returns once both serve.
    pub fn start_streamshield(&mut self) {
        let info = self.root.join("coordinator.json");
        self.spawn_daemon(
            "coordinator",
            &[
                "coordinator",
                "--config",
                &self
                    .config_dir
                    .join("coordinator.yaml")
                    .display()
                    .to_string(),
                "--api-listen",
                "127.0.0.1:0",
                "--info-file",
                &info.display().to_string(),
            ],
        );
        wait_for(
            Duration::from_secs(20),
            "the coordinator's info file",
            || info.exists().then_some(()),
        );
        let info = self.root.join("agent.json");
        self.spawn_daemon(
            "agent",
            &[
                "agent",
                "--config",
                &self.config_dir.join("agent.yaml").display().to_string(),
                "--http",
                "127.0.0.1:0",
                "--info-file",
                &info.display().to_string(),
            ],
        );
        wait_for(Duration::from_secs(20), "the agent's info file", || {
            info.exists().then_some(())
        });
    }

    fn spawn_daemon(&mut self, name: &str, args: &[&str]) {
        let log = std::fs::File::create(self.root.join(format!("{name}.log"))).unwrap();
        let child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting the {name}: {e}"));
        eprintln!("started the {name} (pid {})", child.id());
        self.daemons.push((name.to_string(), child));
    }

    /// The StreamShield daemons this harness started: (name, pid).
    pub fn daemon_pids(&self) -> Vec<(String, u32)> {
        self.daemons
            .iter()
            .map(|(n, c)| (n.clone(), c.id()))
            .collect()
    }

    /// The coordinator's API URL (from its info file).
    pub fn api(&self) -> String {
        let info: Value =
            serde_json::from_slice(&std::fs::read(self.root.join("coordinator.json")).unwrap())
                .unwrap();
        info["api"].as_str().unwrap().to_string()
    }

    /// `streamshield status --json` against this cluster's coordinator.
    pub fn status(&self) -> Value {
        let out = Command::new(BIN)
            .args(["status", "--json", "--api", &self.api(), "--api-token-file"])
            .arg(self.config_dir.join("api.token"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "streamshield status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// GET of Flink's REST API (`None` while it does not answer).
    pub fn rest_get(&self, path: &str) -> Option<Value> {
        let r = self.http.get(format!("{}{path}", self.rest)).send().ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json().ok()
    }

    /// Starts the JobManager and `tms` TaskManagers with Flink's scripts; returns once all are registered.
    pub fn start_flink(&self, tms: usize) {
        assert!(self.script("jobmanager.sh", &["start"]).status.success());
        wait_for(Duration::from_secs(60), "Flink's REST API", || {
            self.rest_get("/overview")
        });
        for _ in 0..tms {
            assert!(self.script("taskmanager.sh", &["start"]).status.success());
        }
        self.wait_taskmanagers(tms);
    }

    /// Waits until `n` TaskManagers are registered.
    pub fn wait_taskmanagers(&self, n: usize) {
        wait_for(
            Duration::from_secs(60),
            &format!("{n} TaskManagers"),
            || {
                let tms = self.rest_get("/taskmanagers")?;
                (tms["taskmanagers"].as_array()?.len() == n).then_some(())
            },
        );
    }

    /// Pids listed in the TaskManagers' pid file (the scripts' `flink-$USER-taskexecutor.pid`).
    pub fn tm_pid_file(&self) -> Vec<u32> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.pid_dir).unwrap().flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if n.ends_with("-taskexecutor.pid") {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
        }
        out
    }

    /// The user's SQL job jar (tests/standalone/SqlRunner.java), compiled with `javac` against this distribution's
    /// lib/ on first use.
    fn sql_runner_jar(&self) -> PathBuf {
        let dir = self.root.join("sql-runner");
        let jar = dir.join("sql-runner.jar");
        if jar.is_file() {
            return jar;
        }
        let classes = dir.join("classes");
        std::fs::create_dir_all(&classes).unwrap();
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/standalone/SqlRunner.java");
        let out = run(Command::new("javac")
            .args(["--release", "11", "-nowarn", "-d"])
            .arg(&classes)
            .arg("-cp")
            .arg(format!("{}/*", self.home.join("lib").display()))
            .arg(&source));
        assert!(out.status.success(), "javac of {}", source.display());
        let out = run(Command::new("jar")
            .arg("cf")
            .arg(&jar)
            .arg("-C")
            .arg(&classes)
            .arg("."));
        assert!(out.status.success(), "jar of the SQL runner");
        jar
    }

    /// Submits `sql` (`SET 'k' = 'v'` statements, then DDL and one INSERT, separated by `;`) as a user's job with
    /// Flink's own `bin/flink run -d`, and returns the job's id once Flink runs every vertex of it.
    pub fn submit_sql(&self, name: &str, sql: &str) -> String {
        let file = self.root.join(format!("{name}.sql"));
        std::fs::write(&file, sql).unwrap();
        let jar = self.sql_runner_jar();
        let out = self.script(
            "flink",
            &[
                "run",
                "-d",
                "-c",
                "SqlRunner",
                &jar.display().to_string(),
                &file.display().to_string(),
            ],
        );
        assert!(out.status.success(), "flink run failed for {name}");
        let id = wait_for(Duration::from_secs(60), &format!("job {name}"), || {
            self.job_id(name)
        });
        self.wait_running(&id, Duration::from_secs(60));
        id
    }

    /// The id of the (newest) job named `name`.
    pub fn job_id(&self, name: &str) -> Option<String> {
        let jobs = self.rest_get("/jobs/overview")?;
        jobs["jobs"]
            .as_array()?
            .iter()
            .filter(|j| j["name"] == name)
            .max_by_key(|j| j["start-time"].as_i64().unwrap_or(0))
            .and_then(|j| j["jid"].as_str().map(str::to_string))
    }

    /// Flink's view of job `id` once it and every vertex are RUNNING.
    pub fn running(&self, id: &str) -> Option<Value> {
        let job = self.rest_get(&format!("/jobs/{id}"))?;
        let all = job["state"] == "RUNNING"
            && job["vertices"]
                .as_array()?
                .iter()
                .all(|v| v["status"] == "RUNNING");
        all.then_some(job)
    }

    pub fn wait_running(&self, id: &str, within: Duration) -> Value {
        wait_for(within, &format!("job {id} RUNNING"), || self.running(id))
    }

    /// Waits until job `id` runs every vertex again after `since_ms` (Flink's RUNNING timestamp, unix ms); returns
    /// that timestamp.
    pub fn wait_running_since(&self, id: &str, since_ms: i64, within: Duration) -> i64 {
        wait_for(
            within,
            &format!("job {id} RUNNING again after {since_ms}"),
            || {
                let job = self.running(id)?;
                let at = job["timestamps"]["RUNNING"].as_i64()?;
                (at >= since_ms).then_some(at)
            },
        )
    }

    /// The resource ids of the TaskManagers running subtasks of job `id`.
    pub fn job_taskmanagers(&self, id: &str) -> Vec<String> {
        let mut out = Vec::new();
        let job = self.rest_get(&format!("/jobs/{id}")).unwrap();
        for v in job["vertices"].as_array().unwrap() {
            let vid = v["id"].as_str().unwrap();
            let tms = self
                .rest_get(&format!("/jobs/{id}/vertices/{vid}/taskmanagers"))
                .unwrap();
            for t in tms["taskmanagers"].as_array().unwrap() {
                let tid = t["taskmanager-id"].as_str().unwrap().to_string();
                if !out.contains(&tid) {
                    out.push(tid);
                }
            }
        }
        out.sort();
        out
    }

    /// The pid of the process with resource id `rid`, as its agent reports it.
    pub fn pid_of(&self, rid: &str) -> Option<u32> {
        let st = self.status();
        st["processes"]
            .as_array()?
            .iter()
            .find(|p| p["resource_id"] == rid)
            .and_then(|p| p["status"]["pid"].as_u64())
            .map(|p| p as u32)
    }

    /// Every live process whose command line names this cluster's temp dir.
    pub fn processes(&self) -> Vec<(i32, u64)> {
        streamshield::local::processes_naming(&self.root)
    }

    /// Stops the cluster the way its user would (Flink's stop scripts, SIGTERM to the daemons) and checks that
    /// nothing is left; whatever is left is killed by the drop.
    pub fn stop_and_check(&mut self) {
        self.stop_daemons();
        self.script("taskmanager.sh", &["stop-all"]);
        self.script("jobmanager.sh", &["stop"]);
        let start = Instant::now();
        while !self.processes().is_empty() && start.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(200));
        }
        let left = self.processes();
        assert!(
            left.is_empty(),
            "left behind after the stop scripts: {left:?}"
        );
    }

    fn stop_daemons(&mut self) {
        for (name, child) in &mut self.daemons {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            if child.try_wait().ok().flatten().is_none() {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                let start = Instant::now();
                while child.try_wait().ok().flatten().is_none()
                    && start.elapsed() < Duration::from_secs(10)
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            eprintln!("stopped the {name}");
        }
        self.daemons.clear();
    }

    /// The daemon logs and Flink's logs, for a failing test's output.
    pub fn dump_logs(&self) {
        for name in ["coordinator.log", "agent.log"] {
            let text = std::fs::read_to_string(self.root.join(name)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            eprintln!("--- {name} (last lines)");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }

    /// Keeps the temp dir (for a look after a failure) instead of removing it on drop.
    pub fn keep(&mut self) -> &Path {
        if let Some(t) = self.tmp.take() {
            let _ = t.keep();
        }
        &self.root
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        self.stop_daemons();
        // Every process naming the temp dir: the Flink JVMs (their classpath is in it), restarted ones included.
        for _ in 0..3 {
            let left = self.processes();
            if left.is_empty() {
                break;
            }
            for (pid, start) in left {
                let same = streamshield::host::procfs::stat(pid as u32)
                    .is_some_and(|s| s.start_ticks == start);
                if same {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}
