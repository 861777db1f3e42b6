//! The terminal: confirmations before destructive steps, and progress bars that are drawn
//! on a terminal and stay quiet when piped.

use std::time::Duration;

use crate::exit::{Failure, Prompt, Usage};

/// Whether a person is there to answer a prompt and watch a progress bar.
pub fn interactive() -> bool {
    pgw_common::output::interactive()
}

/// Asks `question` (default no). Only call it when [`interactive`].
pub fn confirm(question: &str) -> Result<bool, Failure> {
    dialoguer::Confirm::new()
        .with_prompt(question)
        .default(false)
        .interact()
        .map_err(|e| {
            let dialoguer::Error::IO(io) = e;
            Failure::from_classified(Prompt(io))
        })
}

/// Whether to go ahead with something destructive: yes with `--yes`; else the answer to
/// `question` on a terminal (a no is said on stderr); without a terminal, the usage error
/// `refusal` (pass --yes).
pub fn go_ahead(yes: bool, question: &str, refusal: &'static str) -> Result<bool, Failure> {
    if yes {
        return Ok(true);
    }
    if !interactive() {
        return Err(Failure::from_classified(Usage(refusal)));
    }
    let ok = confirm(question)?;
    if !ok {
        eprintln!("pgwarden: nothing changed (not confirmed)");
    }
    Ok(ok)
}

/// A spinner with a step counter on stderr, for a job of `steps` named steps (indicatif
/// draws nothing when stderr is not a terminal).
pub fn steps_bar(steps: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(steps),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} [{pos}/{len}] {msg} ({elapsed})")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A progress callback (`done`, `total`) that draws `what {bar} {pos}/{len} unit` on a
/// terminal, and nothing when stderr is not one.
pub fn counter(what: &'static str, unit: &'static str) -> impl Fn(u64, u64) + Sync {
    let bar = std::sync::Mutex::new(None::<indicatif::ProgressBar>);
    let show = std::io::IsTerminal::is_terminal(&std::io::stderr());
    move |done: u64, total: u64| {
        if !show || total == 0 {
            return;
        }
        let Ok(mut guard) = bar.lock() else { return };
        let b = guard.get_or_insert_with(|| {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template(&format!(
                    "{what} {{bar:40}} {{pos}}/{{len}} {unit} ({{eta}} left)"
                ))
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        b.set_position(done);
        if done >= total {
            b.finish_and_clear();
        }
    }
}
