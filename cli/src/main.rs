//! `clawdspace`: the command-line client of Clawdspace servers (SPEC 11).
//!
//! It only talks HTTP (and WebSocket) to `clawdspaced`; configuration comes
//! from the environment and `~/.clawdspace` (parsed, never executed); the
//! servers found by probing the configured hosts are cached in
//! `~/.clawdspace-servers` in the original CLI's format.

mod api;
mod commands;
mod config;
mod cp;
mod discovery;
mod mcp_cmd;
mod ports;
mod stream;
mod style;

use std::io::Write;

use clap::{Args, CommandFactory, Parser, Subcommand};

/// An error to show the user: `Error: <message>` (or the message alone),
/// then hints, on stderr; the process exits 1.
#[derive(Debug, Clone)]
pub struct Fail {
    message: String,
    prefixed: bool,
    hints: Vec<String>,
}

impl Fail {
    /// Printed as `Error: <message>`.
    pub fn error(message: impl Into<String>) -> Fail {
        Fail {
            message: message.into(),
            prefixed: true,
            hints: Vec::new(),
        }
    }

    /// Printed as the message alone.
    pub fn plain(message: impl Into<String>) -> Fail {
        Fail {
            prefixed: false,
            ..Fail::error(message)
        }
    }

    /// Adds a hint line.
    pub fn hint(mut self, hint: impl Into<String>) -> Fail {
        self.hints.push(hint.into());
        self
    }

    fn print(&self) {
        let line = if self.prefixed {
            format!("Error: {}", self.message)
        } else {
            self.message.clone()
        };
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{}", style::err(style::RED, &line));
        for h in &self.hints {
            let _ = writeln!(err, "  Hint: {h}");
        }
    }
}

const AFTER_HELP: &str = "\
Servers are auto-discovered from known hosts (CLAWDSPACE_HOSTS, default
localhost) and cached for 5 minutes in ~/.clawdspace-servers.
Settings: CLAWDSPACE_KEY and CLAWDSPACE_HOSTS, from the environment or
~/.clawdspace (NAME=value lines; API_KEY and KNOWN_HOSTS also work there).

Examples:
  clawdspace servers --refresh
  clawdspace create dev --memory 4g --cpus 2
  clawdspace exec dev 'uname -a'
  clawdspace shell dev
  clawdspace create dev --repo https://github.com/o/r.git --env DEBUG=1
  clawdspace cp ./data dev:/workspace/data
  clawdspace destroy dev -f";

/// clawdspace - Multi-server sandboxed execution environments
#[derive(Debug, Parser)]
#[command(name = "clawdspace", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

/// `clawdspace create`'s arguments.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Name of the space (letters, digits, _ and -).
    pub name: Option<String>,
    /// Server name (see `servers`), URL, or configured host.
    #[arg(short, long)]
    pub server: Option<String>,
    /// A template of the server (`default`, `gpu`, `offline`, `lan`, or
    /// one of its own): its resources, image, network and workspace
    /// defaults apply; the options given here win.
    #[arg(short, long, value_name = "NAME")]
    pub template: Option<String>,
    /// Memory limit, e.g. 512m, 2g [default: 2g, or the template's].
    #[arg(short, long)]
    pub memory: Option<String>,
    /// CPU limit in cores, e.g. 1, 0.5 [default: 1, or the template's].
    #[arg(short, long)]
    pub cpus: Option<String>,
    /// Create a GPU space on a server that has a GPU.
    #[arg(short, long)]
    pub gpu: bool,
    /// Which GPUs (implies --gpu): a count (`2`) or indexes/UUIDs
    /// (`0,2`); default all.
    #[arg(long, value_name = "N|LIST")]
    pub gpus: Option<String>,
    /// Image reference (default: the server's default image).
    #[arg(long)]
    pub image: Option<String>,
    /// Network: `internet` (outbound through NAT; the server's default),
    /// `lan` (internet plus the private ranges) or `none` (loopback only).
    #[arg(long, value_parser = ["internet", "lan", "none"])]
    pub network: Option<String>,
    /// Publish a TCP port of the space on the server's addresses
    /// (repeatable; the server must allow it: CLAWDSPACE_PUBLISH_PORTS=1).
    #[arg(long = "publish", value_name = "HOST:CONTAINER", value_parser = parse_publish)]
    pub publish: Vec<(u16, u16)>,
    /// A network the space may not reach, `a.b.c.d/len` (repeatable).
    #[arg(long = "block-cidr", value_name = "CIDR")]
    pub block_cidrs: Vec<String>,
    /// A name the space may resolve and reach, `*.example.org` for any
    /// name below it (repeatable); then it reaches nothing else.
    #[arg(long = "allow-domain", value_name = "NAME")]
    pub allow_domains: Vec<String>,
    /// A TCP port the allowed names are reachable on (repeatable;
    /// default 80 and 443).
    #[arg(long = "allow-port", value_name = "PORT")]
    pub allow_ports: Vec<u16>,
    /// An environment variable for the space's init and every exec
    /// (repeatable); `KEY` alone takes its value from here.
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// A local file written into the space (mode 0600, as its user) at
    /// --env-file-path.
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<std::path::PathBuf>,
    /// Where --env-file goes in the space.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/workspace/.env",
        requires = "env_file"
    )]
    pub env_file_path: String,
    /// A git repository to clone into /workspace/<dest> (https:// or
    /// git@host:path; the image needs git).
    #[arg(long, value_name = "URL")]
    pub repo: Option<String>,
    /// The branch to check out (default: the remote's).
    #[arg(long, value_name = "BRANCH", requires = "repo")]
    pub branch: Option<String>,
    /// Where to clone, relative to /workspace (default `repo`).
    #[arg(long, value_name = "DIR", requires = "repo")]
    pub dest: Option<String>,
    /// A token for a private https repository (sent as the space's
    /// GITHUB_TOKEN variable). Prefer --github-token-stdin: arguments are
    /// visible to other users of this machine.
    #[arg(long, value_name = "TOKEN", conflicts_with = "github_token_stdin")]
    pub github_token: Option<String>,
    /// Read the GitHub token from the first line of stdin.
    #[arg(long)]
    pub github_token_stdin: bool,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// List discovered servers with their resources and capabilities.
    Servers {
        /// Forget the cache and probe the configured hosts again.
        #[arg(short, long)]
        refresh: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Create a space on a server (auto-selected unless --server is given).
    Create(Box<CreateArgs>),
    /// List spaces on every server (or one).
    #[command(visible_alias = "ls")]
    List {
        /// Only this server.
        #[arg(short, long)]
        server: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Run a command in a space (via `sh -c`); exits with its exit code.
    #[command(visible_alias = "x")]
    Exec {
        /// Only look for the space on this server.
        #[arg(short, long)]
        server: Option<String>,
        /// Send our stdin to the command (otherwise it reads end-of-file).
        #[arg(short = 'i', long = "stdin")]
        stdin: bool,
        /// Use the plain exec endpoint (output when the command ends, trimmed).
        #[arg(long)]
        no_stream: bool,
        /// Name of the space.
        name: Option<String>,
        /// The command; several arguments are joined with spaces.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Open an interactive shell in a space.
    Shell {
        /// Only look for the space on this server.
        #[arg(short, long)]
        server: Option<String>,
        /// Name of the space.
        name: Option<String>,
    },
    /// Pause a space (its processes are frozen, memory kept).
    Stop {
        /// Only look for the space on this server.
        #[arg(short, long)]
        server: Option<String>,
        name: Option<String>,
    },
    /// Resume (or restart) a space.
    Start {
        /// Only look for the space on this server.
        #[arg(short, long)]
        server: Option<String>,
        name: Option<String>,
    },
    /// Destroy a space and its files (asks first unless forced); its
    /// /workspace volume is kept for a new space of the same name unless
    /// --volume is given.
    Destroy {
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
        /// Delete the space's /workspace volume too.
        #[arg(long)]
        volume: bool,
        /// Only look for the space on this server.
        #[arg(short, long)]
        server: Option<String>,
        name: Option<String>,
    },
    /// Print a URL for a port of a space: the authenticated proxy, or with
    /// --public a preview link that needs no key.
    Port {
        /// Only look for the space on this server.
        #[arg(short, long)]
        server: Option<String>,
        /// A preview link anyone with the URL can open (no key).
        #[arg(long)]
        public: bool,
        /// Lifetime of a public link in seconds (default: a day).
        #[arg(long, value_name = "SECONDS")]
        ttl: Option<u64>,
        /// Open it in the browser too.
        #[arg(long)]
        open: bool,
        /// Name of the space.
        name: String,
        /// The port inside the space.
        port: u16,
    },
    /// Forward a local port to a port of a space (over the API's
    /// WebSocket, like kubectl port-forward) until interrupted.
    Forward {
        /// Only look for the space on this server.
        #[arg(short, long)]
        server: Option<String>,
        /// Name of the space.
        name: String,
        /// The port inside the space.
        port: u16,
        /// The local port on 127.0.0.1 (default: the same number; 0: any
        /// free one, printed).
        local: Option<u16>,
    },
    /// Copy files or directories between here and a space, streamed:
    /// `cp ./local dev:/path`, `cp dev:/path ./local` (a relative space
    /// path is under /workspace; `-` is stdin or stdout: a file's bytes, or
    /// a directory as a tar stream).
    Cp {
        /// Only look for the space on this server.
        #[arg(short, long)]
        server: Option<String>,
        /// What to copy: a local path, `-`, or `space:path`.
        src: String,
        /// Where to: a local path, `-`, or `space:path`.
        dst: String,
    },
    /// Show a server's system status (default: the first server).
    System {
        #[arg(short, long)]
        server: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show configuration, key source and discovered servers.
    Config {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Serve the Model Context Protocol on stdin/stdout: tools for an AI
    /// agent (spaces, exec, run_code, files, templates) on the servers
    /// found here, with this key. See docs/AGENTS.md.
    Mcp {
        /// Only spaces whose names match one of these glob patterns
        /// (`*`, `?`; repeatable or comma-separated).
        #[arg(long, value_name = "PATTERN")]
        allow: Vec<String>,
        /// Never spaces whose names match one of these patterns (wins
        /// over --allow).
        #[arg(long, value_name = "PATTERN")]
        deny: Vec<String>,
        /// Leave out upload_file and download_file (the tools that read
        /// and write files of this machine).
        #[arg(long)]
        no_local_files: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
}

/// `18000:8000` as (host, container).
fn parse_publish(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("'{s}': HOST:CONTAINER, ports 1-65535 (e.g. 18000:8000)");
    let (h, c) = s.split_once(':').ok_or_else(bad)?;
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(bad)
    };
    Ok((port(h)?, port(c)?))
}

fn real_main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                _ => 1,
            };
            let _ = e.print();
            return code;
        }
    };
    let Some(cmd) = cli.command else {
        let _ = Cli::command().print_help();
        return 0;
    };
    if let Cmd::Completions { shell } = cmd {
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "clawdspace",
            &mut std::io::stdout(),
        );
        return 0;
    }
    let settings = config::Settings::load();
    for w in &settings.warnings {
        eprintln!("{}", style::err(style::YELLOW, &format!("Warning: {w}")));
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            Fail::error(format!("cannot start: {e}")).print();
            return 1;
        }
    };
    let api = match api::Api::new(&settings) {
        Ok(a) => a,
        Err(e) => {
            Fail::error(format!("cannot set up the HTTP client: {e:#}")).print();
            return 1;
        }
    };
    let ctx = commands::Ctx {
        settings: &settings,
        api: &api,
    };
    let result = rt.block_on(ctx.run(cmd));
    match result {
        Ok(code) => code,
        Err(f) => {
            let _ = std::io::stdout().flush();
            f.print();
            1
        }
    }
}

fn main() {
    // Behave like other Unix tools in a pipeline (`clawdspace list | head`):
    // die quietly on a closed pipe instead of failing to print.
    // SAFETY: called first thing, before any other thread exists; resetting
    // SIGPIPE to its default disposition has no other effect.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let code = real_main();
    let _ = std::io::stdout().flush();
    // Exit at once: a thread may still be blocked reading stdin.
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn published_ports_are_host_then_container() {
        assert_eq!(parse_publish("18000:8000"), Ok((18000, 8000)));
        for bad in ["8000", "0:80", "80:70000", "a:b", ":80"] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
    }
}
