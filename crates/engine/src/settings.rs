//! Settings of the HTTP surface: [`Settings`] (body limit, body timeout and CORS,
//! shared by every adapter) and [`ServerSettings`] (what only the TCP server
//! needs: connection timeouts, the connection cap, the shutdown deadline), plus
//! the duration syntax (`500ms`, `10s`, `2m`) their flags use.

use std::time::Duration;

/// Default request body limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// Default time for a whole request body to arrive: 30 s.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of the HTTP surface (not of the database).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Time allowed for the whole request body to arrive, from the moment the
    /// handler starts reading it; past it the request gets a 408.
    pub body_timeout: Duration,
    /// Origins allowed by CORS; empty disables CORS, `*` allows any.
    pub cors_origins: Vec<String>,
    /// Most Server-Sent Event streams open at once; past it, 503 `busy`.
    pub max_streams: usize,
    /// Interval of a stream's heartbeat comments: below the server's idle
    /// timeout, or the connection is taken for a stalled one.
    pub stream_heartbeat: Duration,
    /// The path prefix clients use before the API's own paths (`/api`, behind
    /// a proxy or a custom domain): stripped from a request path that starts
    /// with it, and put in front of every `Location`.
    pub base_path: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            body_limit: DEFAULT_BODY_LIMIT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            cors_origins: Vec::new(),
            max_streams: crate::streams::DEFAULT_MAX_STREAMS,
            stream_heartbeat: crate::streams::DEFAULT_HEARTBEAT,
            base_path: None,
        }
    }
}

/// Default cap on open client connections (lowered at start to fit the fd limit).
pub const DEFAULT_MAX_CLIENTS: u32 = 4096;

/// Settings of the TCP/HTTP server adapter: how long and how many connections
/// may stay open, so that no single client can hold the server.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// A connection with no request in progress and no byte of a new one for
    /// this long (since accept or since its last response was sent) is closed
    /// silently; so is one whose response the client stops reading for as long.
    pub idle_timeout: Duration,
    /// A request head that is not complete this long after its first byte
    /// gets a 408 and the connection is closed.
    pub header_timeout: Duration,
    /// Most client connections open at once. At the cap the connection idle
    /// the longest is closed to make room; when all are busy (a response
    /// still being sent counts) the newcomer gets a 503. Lowered at start to fit the file-descriptor limit.
    pub max_clients: usize,
    /// After SIGINT/SIGTERM, in-flight requests get this long to finish;
    /// then every remaining connection is closed and `serve` returns.
    pub shutdown_timeout: Duration,
    /// File descriptors kept out of the connection cap for everything else
    /// the process opens (database connections, SQLite's files, the log).
    pub fd_reserve: u64,
}

/// File descriptors kept free whatever the database: the listener, stdio,
/// the runtime, evicted connections still closing (up to 32) and refused
/// ones being answered 503 (up to 64).
const BASE_FD_RESERVE: u64 = 128;

/// File descriptors to keep free besides client connections, for a database
/// that holds `database_descriptors` open at most
/// ([`crate::storage::file_descriptors`]): [`BASE_FD_RESERVE`] plus those.
pub fn fd_reserve_for(database_descriptors: u64) -> u64 {
    BASE_FD_RESERVE.saturating_add(database_descriptors)
}

/// Parses a duration written as a whole number and a unit: `500ms`, `10s`,
/// `2m`, `1h`, `7d`.
///
/// The unit is required (a bare `10` is ambiguous) and zero is refused: every
/// duration here is a limit, and a zero limit would close every connection.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let usage = || {
        format!(
            "invalid duration {text:?}: write a whole number and ms, s, m, h or d (e.g. 500ms, 10s, 2m, 1h)"
        )
    };
    let n: u64 = number.parse().map_err(|_| usage())?;
    let duration = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(usage)?),
        "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(usage)?),
        "d" => Duration::from_secs(n.checked_mul(86_400).ok_or_else(usage)?),
        _ => return Err(usage()),
    };
    if duration.is_zero() {
        return Err(format!(
            "invalid duration {text:?}: must be greater than zero"
        ));
    }
    Ok(duration)
}

/// Writes a duration the way [`parse_duration`] reads it (`1500ms`, `10s`, `2m`).
pub(crate) fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Writes a size the way the docs do: `1 MiB`, `512 KiB`, else in bytes.
pub(crate) fn format_bytes(n: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * KIB;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_reserves_descriptors_for_its_writer_and_every_reader() {
        use crate::storage::file_descriptors;
        // One writer, the checkpointer, two sqlx pools of four readers, and the inline readers
        // (four lists and one lookup per core), each with its database, -wal
        // and -shm files.
        let cores = std::thread::available_parallelism().map_or(4, std::num::NonZero::get) as u64;
        assert_eq!(
            fd_reserve_for(file_descriptors("sqlite://a.db", 4)),
            128 + 3 * (2 + 3 * 4 + cores)
        );
        // A server database: one socket per connection lent to requests,
        // two for migrations and notifications, one queue listener.
        assert_eq!(
            fd_reserve_for(file_descriptors("postgres://db.example/app", 4)),
            128 + 4 + 3
        );
        assert_eq!(
            fd_reserve_for(file_descriptors("mysql://db.example/app", 0)),
            128 + 1 + 3
        );
    }

    #[test]
    fn durations_parse_with_their_unit_and_print_back_the_same() {
        for (text, d) in [
            ("500ms", Duration::from_millis(500)),
            ("10s", Duration::from_secs(10)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("7d", Duration::from_secs(7 * 86_400)),
            (" 1s ", Duration::from_secs(1)),
        ] {
            assert_eq!(parse_duration(text), Ok(d), "{text}");
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
    }

    #[test]
    fn sizes_print_in_the_largest_whole_unit() {
        assert_eq!(format_bytes(DEFAULT_BODY_LIMIT), "1 MiB");
        assert_eq!(format_bytes(4 * 1024 * 1024), "4 MiB");
        assert_eq!(format_bytes(1536 * 1024), "1536 KiB");
        assert_eq!(format_bytes(1000), "1000 bytes");
    }

    #[test]
    fn durations_without_a_unit_with_a_fraction_or_zero_are_refused() {
        for text in ["10", "1.5s", "10w", "s", "", "-1s", "0s", "0ms"] {
            let err = parse_duration(text).expect_err(text);
            assert!(err.contains("invalid duration"), "{text}: {err}");
        }
    }
}
