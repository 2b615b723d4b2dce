//! A PostgreSQL cluster of a test's own: `initdb` in a temporary
//! directory, a free port on 127.0.0.1, settings of the test's choosing
//! (its transaction ids, TLS on). Stopped and removed when dropped, also
//! when the test fails.
//!
//! `initdb` and `pg_ctl` refuse to run as root, so under root they run as
//! the `postgres` OS user, which then owns the directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A running cluster; see the module documentation.
pub struct TempCluster {
    bindir: PathBuf,
    data: PathBuf,
    port: u16,
    /// Holds the data directory, the socket and the server's log; removed
    /// after `drop` has stopped the server.
    dir: tempfile::TempDir,
}

impl TempCluster {
    /// A cluster with the defaults (trust authentication for `postgres`).
    pub fn start() -> TempCluster {
        TempCluster::start_with(&[], &[])
    }

    /// A cluster with `files` written into its data directory before it
    /// starts (readable by the server only, as it wants of a key file) and
    /// `settings` given as `-c name=value`, e.g. `ssl=on` with
    /// `ssl_cert_file` and `ssl_key_file` naming two of the files.
    pub fn start_with(files: &[(&str, &[u8])], settings: &[(&str, &str)]) -> TempCluster {
        let bindir = postgres_bindir();
        let dir = tempfile::tempdir().expect("temporary directory");
        let data = dir.path().join("data");
        if is_root() {
            chown_to_postgres(dir.path());
        }
        succeeded(
            "initdb",
            server_program(&bindir, "initdb")
                .args(["-U", "postgres", "--auth=trust", "--no-sync"])
                // Whatever the machine's locale: C goes with any encoding.
                .args(["-E", "UTF8", "--locale=C"])
                .arg("-D")
                .arg(&data)
                .output()
                .expect("initdb runs"),
        );
        for (name, content) in files {
            let path = data.join(name);
            std::fs::write(&path, content).expect("write a file into the cluster");
            set_private(&path);
            if is_root() {
                chown_to_postgres(&path);
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = TempCluster {
            bindir,
            data,
            port,
            dir,
        };
        let mut options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            cluster.dir.path().display()
        );
        for (name, value) in settings {
            options.push_str(&format!(" -c {name}={value}"));
        }
        let started = server_program(&cluster.bindir, "pg_ctl")
            .args(["start", "-w", "-t", "30", "-o", &options, "-D"])
            .arg(&cluster.data)
            .arg("-l")
            .arg(cluster.log_file())
            .stdout(Stdio::null())
            .output()
            .expect("pg_ctl runs");
        if !started.status.success() {
            let log = std::fs::read_to_string(cluster.log_file()).unwrap_or_default();
            panic!("pg_ctl start failed ({}): {log}", started.status);
        }
        cluster
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory of the server's programs (`pg_dump`, `pg_restore`…).
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        let stopped = server_program(&self.bindir, "pg_ctl")
            .args(["stop", "-w", "-m", "immediate", "-D"])
            .arg(&self.data)
            .output();
        if !stopped.is_ok_and(|o| o.status.success()) {
            eprintln!("could not stop the cluster in {}", self.data.display());
        }
    }
}

/// Runs a PostgreSQL server program; as the `postgres` OS user when this
/// runs as root.
fn server_program(bindir: &Path, program: &str) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(bindir.join(program));
        command
    } else {
        Command::new(bindir.join(program))
    }
}

fn is_root() -> bool {
    let id = Command::new("id").arg("-u").output().expect("id runs");
    String::from_utf8_lossy(&id.stdout).trim() == "0"
}

fn chown_to_postgres(path: &Path) {
    succeeded(
        "chown",
        Command::new("chown")
            .arg("postgres:")
            .arg(path)
            .output()
            .expect("chown runs"),
    );
}

#[cfg(unix)]
fn set_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

#[cfg(not(unix))]
fn set_private(_path: &Path) {}

fn succeeded(what: &str, output: Output) -> Output {
    assert!(
        output.status.success(),
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The directory of the installed PostgreSQL's programs: `pg_config`'s, or
/// Debian's newest `/usr/lib/postgresql/<version>/bin`.
fn postgres_bindir() -> PathBuf {
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(dir) = from_pg_config.filter(|dir| dir.join("initdb").exists()) {
        return dir;
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's programs: no pg_config, no /usr/lib/postgresql")
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| dir.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("an initdb under /usr/lib/postgresql")
        .1
}
