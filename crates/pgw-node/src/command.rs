//! Running a PostgreSQL tool to completion: a `tracing` event with the program and its
//! arguments (which never hold a password: passwords travel in the environment or a file),
//! output captured, or stderr streamed line by line to a callback.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Output, Stdio};

use crate::{NodeError, Tool};

/// Runs `cmd` (a command for `tool`) to completion, capturing its output.
pub(crate) fn run(cmd: &mut Command, tool: Tool) -> Result<Output, NodeError> {
    trace(cmd);
    cmd.output().map_err(|source| NodeError::Spawn {
        program: tool,
        source,
    })
}

/// Runs `cmd` to completion, calling `on_line` with each line of its stderr as it arrives
/// (lines end at `\n` or `\r`); returns the exit status with the whole stdout and stderr.
pub(crate) fn run_streaming(
    cmd: &mut Command,
    tool: Tool,
    mut on_line: impl FnMut(&str),
) -> Result<Output, NodeError> {
    trace(cmd);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let spawn_err = |source| NodeError::Spawn {
        program: tool,
        source,
    };
    let mut child = cmd.spawn().map_err(spawn_err)?;
    // Drain stdout on a thread so a chatty tool cannot block on a full pipe.
    let stdout = child.stdout.take().map(|mut out| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = out.read_to_end(&mut buf);
            buf
        })
    });
    let mut stderr = Vec::new();
    if let Some(err) = child.stderr.take() {
        let mut reader = BufReader::new(err);
        let mut line = Vec::new();
        loop {
            line.clear();
            match read_line(&mut reader, &mut line) {
                Ok(0) => break,
                Ok(_) => {
                    stderr.extend_from_slice(&line);
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end_matches(['\n', '\r']);
                    if !text.is_empty() {
                        on_line(text);
                    }
                }
                Err(_) => break,
            }
        }
    }
    let status = child.wait().map_err(spawn_err)?;
    let stdout = stdout.and_then(|t| t.join().ok()).unwrap_or_default();
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Reads up to and including the next `\n` or `\r` (progress reports end lines with `\r` on a
/// terminal).
fn read_line(reader: &mut impl BufRead, out: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut n = 0;
    loop {
        let (done, used) = {
            let buf = reader.fill_buf()?;
            if buf.is_empty() {
                return Ok(n);
            }
            match buf.iter().position(|b| *b == b'\n' || *b == b'\r') {
                Some(i) => {
                    out.extend_from_slice(&buf[..=i]);
                    (true, i + 1)
                }
                None => {
                    out.extend_from_slice(buf);
                    (false, buf.len())
                }
            }
        };
        reader.consume(used);
        n += used;
        if done {
            return Ok(n);
        }
    }
}

/// stdout and stderr of `out`, one after the other, lossily decoded.
pub(crate) fn combined(out: &Output) -> String {
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    s
}

fn trace(cmd: &Command) {
    let program = cmd.get_program().to_string_lossy();
    let args: Vec<&OsStr> = cmd.get_args().collect();
    tracing::debug!(%program, ?args, "run");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_end_at_newline_or_carriage_return() {
        let mut r = BufReader::with_capacity(3, &b"ab\rcd\nef"[..]);
        let mut lines = Vec::new();
        loop {
            let mut line = Vec::new();
            if read_line(&mut r, &mut line).unwrap() == 0 {
                break;
            }
            lines.push(String::from_utf8(line).unwrap());
        }
        assert_eq!(lines, ["ab\r", "cd\n", "ef"]);
    }

    #[test]
    fn streaming_sees_each_stderr_line() {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "echo out; printf '1\\r2\\n' >&2; echo 3 >&2; exit 3"]);
        let mut seen = Vec::new();
        let out = run_streaming(&mut cmd, Tool::Psql, |l| seen.push(l.to_owned())).unwrap();
        assert_eq!(seen, ["1", "2", "3"]);
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(combined(&out), "out\n1\r2\n3\n");
    }
}
