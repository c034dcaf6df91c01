//! Every example README, and the main one, run as written: the `sh` blocks
//! are read from the files themselves (so a README cannot drift from the
//! code) and run in order by bash, in a copy of the example's folder,
//! against the binary under test. The only rewrites are where the binary
//! is (`cargo run --release --` → this build), which port it listens on
//! (each `localhost:8080` gets a free port) and `&` after a `serve`, since
//! the README runs it in a terminal of its own. `cargo test` and `cargo
//! install` are not run.
//!
//! What each command must do: exit 0 (a `curl --max-time` stream may end
//! by its timeout); every HTTP answer is 2xx or 3xx unless the command's
//! comment, on its line or the comment lines right after it, gives the
//! status (`# 404: …`, `# HTTP/1.1 201 Created`, `# {"status":409,…}`), in
//! which case the last answer must have it.

mod common;

use std::path::Path;

use common::repo_root;

/// One command of a README, with its comment.
#[derive(Debug)]
struct Step {
    command: String,
    /// The trailing comment and the comment lines right after it.
    comment: String,
}

/// Where a quote or substitution opened on this line is still open.
fn open_constructs(text: &str) -> bool {
    let (mut single, mut double, mut depth) = (false, false, 0i32);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if !single => {
                chars.next();
            }
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '(' if !single && !double => depth += 1,
            ')' if !single && !double => depth -= 1,
            '#' if !single && !double && depth == 0 => {
                // A comment runs to the end of the line.
                while chars.peek().is_some_and(|c| *c != '\n') {
                    chars.next();
                }
            }
            _ => {}
        }
    }
    single || double || depth > 0
}

/// `text` without its trailing comment (outside quotes), and the comment.
fn split_comment(text: &str) -> (String, String) {
    let (mut single, mut double) = (false, false);
    let mut previous = ' ';
    for (i, c) in text.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && previous.is_whitespace() => {
                return (
                    text[..i].trim_end().to_owned(),
                    text[i + 1..].trim().to_owned(),
                );
            }
            _ => {}
        }
        previous = c;
    }
    (text.trim_end().to_owned(), String::new())
}

/// The commands of every `sh` block of `markdown`, in order.
fn steps(markdown: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    // Whether comment lines still belong to the last command.
    let mut attached = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block && line.trim() == "```sh";
            attached = false;
            continue;
        }
        if !in_block {
            continue;
        }
        if pending.is_empty() {
            let trimmed = line.trim();
            if trimmed.is_empty() {
                attached = false;
                continue;
            }
            if let Some(comment) = trimmed.strip_prefix('#') {
                if attached && let Some(last) = steps.last_mut() {
                    last.comment.push('\n');
                    last.comment.push_str(comment.trim());
                }
                continue;
            }
        }
        if !pending.is_empty() {
            pending.push('\n');
        }
        pending.push_str(line);
        let continued = pending.ends_with('\\')
            || pending.trim_end().ends_with('|')
            || open_constructs(&pending);
        if continued {
            continue;
        }
        let (command, comment) = split_comment(&pending);
        pending.clear();
        steps.push(Step { command, comment });
        attached = true;
    }
    steps
}

/// The status a step's comment says its (last) answer has.
fn expected_status(comment: &str) -> Option<u16> {
    for line in comment.lines() {
        let line = line.trim();
        let line = line.strip_prefix("HTTP/1.1 ").unwrap_or(line);
        let digits: String = line.chars().take_while(char::is_ascii_digit).collect();
        let after = line[digits.len()..].chars().next();
        if digits.len() == 3 && after.is_none_or(|c| !c.is_alphanumeric()) {
            return digits.parse().ok();
        }
        if let Some((_, rest)) = line.split_once("\"status\":") {
            return rest.get(..3).and_then(|s| s.parse().ok());
        }
    }
    None
}

/// The SQLite file a `serve` command keeps its data in: its
/// `--database-url`, else `anteroom.db` beside its schema.
fn served_database(command: &str) -> Option<String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let serve = words.iter().position(|w| *w == "serve")?;
    if let Some(i) = words.iter().position(|w| *w == "--database-url") {
        return words.get(i + 1).map(|w| w.to_string());
    }
    let schema = words.get(serve + 1).filter(|w| !w.starts_with('-'))?;
    let dir = Path::new(schema).parent()?;
    Some(dir.join("anteroom.db").display().to_string())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if !entry.file_name().to_string_lossy().contains(".db") {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The bash script running `steps`, each followed by its marker.
fn script(steps: &[Step], ports: &[(u16, u16)]) -> String {
    let mut out = String::from(
        "set -u\n\
         trap 'kill $(jobs -p) 2>/dev/null' EXIT\n\
         curl() { command curl -w '%{stderr}@@status %{http_code}\\n' \"$@\"; }\n",
    );
    for (i, step) in steps.iter().enumerate() {
        let mut command = step
            .command
            .replace("cargo run --release -q --", "\"$ANTEROOM\"")
            .replace("cargo run --release --", "\"$ANTEROOM\"");
        if command.starts_with("anteroom ") {
            command = format!("\"$ANTEROOM\"{}", &command["anteroom".len()..]);
        }
        for (written, actual) in ports {
            command = command
                .replace(
                    &format!("localhost:{written}"),
                    &format!("localhost:{actual}"),
                )
                .replace(&format!("--port {written}"), &format!("--port {actual}"));
        }
        let serves = command.contains("\"$ANTEROOM\" serve");
        if serves {
            let port = ports
                .iter()
                .map(|(_, actual)| *actual)
                .find(|p| command.contains(&format!("--port {p}")))
                .unwrap_or(ports[0].1);
            out.push_str(&format!(
                "PORT={port} {command} > serve-{i}.log 2>&1 &\n\
                 for _ in $(seq 400); do command curl -sf localhost:{port}/health > /dev/null && break; sleep 0.05; done\n"
            ));
        } else {
            out.push_str(&command);
            out.push('\n');
        }
        out.push_str(&format!("echo \"@@step {i} $?\" >&2\n"));
    }
    out
}

/// Runs the README at `readme` in a copy of `folders` (paths relative to the
/// repository) and checks every step.
fn run_readme(readme: &str, folders: &[&str]) {
    // What the READMEs' commands use besides the binary.
    for tool in ["bash", "curl", "python3"] {
        let found = std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            println!("skipped: {readme} runs {tool}, which this machine lacks");
            return;
        }
    }
    let text = std::fs::read_to_string(repo_root().join(readme)).expect("README");
    let steps: Vec<Step> = steps(&text)
        .into_iter()
        .filter(|s| !s.command.contains("cargo test") && !s.command.contains("cargo install"))
        .collect();
    assert!(!steps.is_empty(), "{readme} has no sh commands");
    // Every server of an example runs on a database its README resets
    // first, so the README can be run again as written. (The main README's
    // first command stays one command; its prose says how to reset.)
    for (i, step) in steps.iter().enumerate().filter(|_| readme != "README.md") {
        let Some(database) = served_database(&step.command) else {
            continue;
        };
        assert!(
            steps[..i]
                .iter()
                .any(|s| s.command.starts_with("rm -f ") && s.command.contains(&database)),
            "{readme}: `{}` serves {database}, and no `rm -f {database}*` before it starts it again from nothing",
            step.command
        );
    }
    let work = tempfile::tempdir().unwrap();
    for folder in folders {
        copy_dir(&repo_root().join(folder), &work.path().join(folder));
    }
    let ports: Vec<(u16, u16)> = [8080, 8081]
        .into_iter()
        .filter(|p| text.contains(&format!("localhost:{p}")))
        .map(|p| (p, free_port()))
        .collect();
    let script = script(&steps, &ports);
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(work.path())
        .env("ANTEROOM", common::binary())
        .env_remove("DATABASE_URL")
        .env_remove("PORT")
        .output()
        .expect("run bash");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let logs: String = std::fs::read_dir(work.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("serve-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    let context =
        || format!("{readme}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- server\n{logs}");
    let mut statuses: Vec<u16> = Vec::new();
    let mut done = 0;
    for line in stderr.lines() {
        if let Some(code) = line.strip_prefix("@@status ") {
            statuses.push(code.trim().parse().unwrap_or(0));
        } else if let Some(marker) = line.strip_prefix("@@step ") {
            let (i, exit) = marker.split_once(' ').unwrap();
            let (i, exit): (usize, i32) = (i.parse().unwrap(), exit.trim().parse().unwrap());
            let step = &steps[i];
            let timed_out = exit == 28 && step.command.contains("--max-time");
            assert!(
                exit == 0 || timed_out,
                "`{}` exited with {exit}\n{}",
                step.command,
                context()
            );
            match (expected_status(&step.comment), statuses.last()) {
                (Some(expected), Some(last)) => assert_eq!(
                    *last,
                    expected,
                    "`{}` answered {statuses:?}, its comment says {expected}\n{}",
                    step.command,
                    context()
                ),
                _ => assert!(
                    statuses.iter().all(|s| (200..400).contains(s)),
                    "`{}` answered {statuses:?}\n{}",
                    step.command,
                    context()
                ),
            }
            statuses.clear();
            done += 1;
        }
    }
    assert_eq!(done, steps.len(), "not every step ran\n{}", context());
}

#[test]
fn the_main_readme_runs_as_written() {
    run_readme("README.md", &["examples/office-hours", "examples/users"]);
}

#[test]
fn the_accounts_readme_runs_as_written() {
    run_readme("examples/accounts/README.md", &["examples/accounts"]);
}

#[test]
fn the_courses_readme_runs_as_written() {
    run_readme("examples/courses/README.md", &["examples/courses"]);
}

#[test]
fn the_office_hours_readme_runs_as_written() {
    run_readme(
        "examples/office-hours/README.md",
        &["examples/office-hours"],
    );
}

#[test]
fn the_records_readme_runs_as_written() {
    run_readme("examples/records/README.md", &["examples/records"]);
}

#[test]
fn the_users_readme_runs_as_written() {
    run_readme("examples/users/README.md", &["examples/users"]);
}

#[test]
fn commands_and_their_expected_statuses_are_read_as_a_reader_would() {
    let steps = steps(
        "```sh\nexport A=1\ncurl -s x \\\n  -d '{\"a\":1}'   # 404: gone\n# {\"status\":409}\nB=$(curl -s y |\n  python3 -c 'print(1)')\n\ncurl z\n```\n```toml\nnot = 'sh'\n```\n",
    );
    let commands: Vec<&str> = steps.iter().map(|s| s.command.as_str()).collect();
    assert_eq!(
        commands,
        [
            "export A=1",
            "curl -s x \\\n  -d '{\"a\":1}'",
            "B=$(curl -s y |\n  python3 -c 'print(1)')",
            "curl z"
        ]
    );
    assert_eq!(expected_status(&steps[1].comment), Some(404));
    assert_eq!(
        expected_status("{\"status\":409,\"code\":\"x\"}"),
        Some(409)
    );
    assert_eq!(expected_status("HTTP/1.1 201 Created"), Some(201));
    assert_eq!(expected_status("200, etag \"2\""), Some(200));
    assert_eq!(expected_status("public, cacheable"), None);
    assert_eq!(expected_status("3 seconds"), None);
}
