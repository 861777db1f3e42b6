//! Printing a fixture's log when the test that owns it panics: the reason a server failed is
//! usually in its log, and the test's own output does not show it.

use std::io::Write;

/// How many log lines are printed.
pub const PANIC_LOG_LINES: usize = 60;

/// If this thread is panicking, prints the last [`PANIC_LOG_LINES`] lines of `log` to stderr,
/// framed and labelled with the thread (= the test) and `what` ("the server log (port 4242)").
/// Never panics itself.
pub fn print_tail_if_panicking(what: &str, log: &str) {
    if !std::thread::panicking() {
        return;
    }
    let lines: Vec<&str> = log.lines().collect();
    let tail = &lines[lines.len().saturating_sub(PANIC_LOG_LINES)..];
    // writeln! rather than eprintln!, which panics (here: aborts) if stderr is gone. It
    // bypasses the test harness's capture, so name the thread.
    let _ = writeln!(
        std::io::stderr(),
        "----- {} panicked; last {} lines of {what} -----\n{}\n----- end of {what} -----",
        std::thread::current().name().unwrap_or("a thread"),
        tail.len(),
        tail.join("\n")
    );
}
