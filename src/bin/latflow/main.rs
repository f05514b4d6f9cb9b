//! The `latflow` command line: parses flags or a runcard, calls the library, prints.
//!
//! One module per part: [`args`] (flags shared by the commands), one module per command
//! family ([`sample`], [`train`], [`study`]), [`progress`] (stages on stderr), [`signals`]
//! (stop requests and exit statuses), [`output`] (tables and summaries on stdout) and
//! [`ranks`] (MPI processes).

mod args;
mod output;
mod progress;
mod ranks;
mod sample;
mod signals;
mod study;
mod train;

use std::process::ExitCode;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::args::{flag_name, given};
use crate::ranks::Ranks;
use crate::sample::SampleArgs;
use crate::signals::Signals;
use crate::study::{AnalyseArgs, RunArgs, SweepArgs};
use crate::train::{CurriculumArgs, TrainArgs};

#[derive(Parser)]
#[command(
    name = "latflow",
    version,
    about = "Lattice field theory sampling with normalizing flows, HMC and local Metropolis",
    after_help = "Without a command, latflow runs the built-in study (latflow run): L = 8 φ⁴, a flow trained and compared with flow+local, tuned HMC and local Metropolis; the report goes to latflow-out/phi4-L8/index.html."
)]
struct Cli {
    /// Without a subcommand, `latflow` runs the built-in study (`latflow run`).
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole study from a runcard (or the built-in one): train a flow, run and
    /// compare samplers, write data, plots and an HTML report into one folder.
    Run(RunArgs),
    /// Recompute a study's analysis, tables and plots from its stored series.
    Analyse(AnalyseArgs),
    /// Train and sample flows over a grid of lattice sizes, budgets and seeds into one table.
    Sweep(SweepArgs),
    /// Run a Markov chain and report observables with Γ-method errors.
    Sample(SampleArgs),
    /// Train a normalizing flow by reverse KL and write the model file.
    Train(TrainArgs),
    /// Train one flow through a sequence of stages (growing lattices, moving couplings),
    /// each starting from the flow the stage before wrote; resumes where it stopped.
    Curriculum(CurriculumArgs),
}

/// Prints an error once: each cause whose text the message already contains is skipped
/// (an I/O error is part of the library's message), and an invalid parameter is named by
/// the flag the user typed.
fn print_error(e: &anyhow::Error, source: &ParameterSource) {
    let mut text = match e.downcast_ref::<latflow::Error>() {
        Some(latflow::Error::InvalidParameter { name, reason }) => {
            // `analyse` sets analysis keys by their own flags.
            let flag = match name.strip_prefix("analysis.") {
                Some("histogram_bins") => "bins",
                Some(key) => key,
                None => name,
            };
            let id = flag.replace('.', "_");
            let typed = source.matches.is_some_and(|m| given(m, &id));
            if typed || (source.file.is_none() && source.has_flag(&id)) {
                format!("invalid value for {}: {reason}", flag_name(flag))
            } else if let Some(file) = source.file {
                format!("invalid value of `{name}` in the {file}: {reason}")
            } else {
                e.to_string()
            }
        }
        _ => e.to_string(),
    };
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    eprintln!("error: {text}");
}

/// Where the parameters of a run came from, to name a refused one as the user gave it.
struct ParameterSource<'a> {
    /// The subcommand's parsed command line.
    matches: Option<&'a ArgMatches>,
    /// The subcommand's definition (its flags).
    command: Option<&'a clap::Command>,
    /// `Some("runcard")` or `Some("checkpoint")` when the run came from a file.
    file: Option<&'static str>,
}

impl ParameterSource<'_> {
    fn has_flag(&self, id: &str) -> bool {
        self.command
            .is_some_and(|c| c.get_arguments().any(|a| a.get_id() == id))
    }
}

fn main() -> ExitCode {
    let definition = Cli::command();
    let matches = if std::env::args_os().len() <= 1 {
        definition.clone().get_matches_from(["latflow", "run"])
    } else {
        definition.clone().get_matches()
    };
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // The limit variables are read wherever a size is checked: refuse a malformed one first.
    if let Err(e) = latflow::limits::Limits::current() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let ranks = match Ranks::init() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Rank 0 alone shows progress and prints results.
    if !ranks.shared.is_root()
        && let Some(command) = &mut cli.command
    {
        let output = match command {
            Command::Run(a) => &mut a.output,
            Command::Analyse(a) => &mut a.output,
            Command::Sweep(a) => &mut a.output,
            Command::Sample(a) => &mut a.output,
            Command::Train(a) => &mut a.output,
            Command::Curriculum(a) => &mut a.output,
        };
        output.quiet = true;
    }
    let Some(command) = &cli.command else {
        return ExitCode::FAILURE;
    };
    let output = match command {
        Command::Run(a) => &a.output,
        Command::Analyse(a) => &a.output,
        Command::Sweep(a) => &a.output,
        Command::Sample(a) => &a.output,
        Command::Train(a) => &a.output,
        Command::Curriculum(a) => &a.output,
    };
    if !(output.progress_interval.is_finite() && output.progress_interval >= 0.0) {
        eprintln!(
            "error: invalid value for --progress-interval: must be a finite number of seconds \
             ≥ 0, got {}",
            output.progress_interval
        );
        return ExitCode::FAILURE;
    }
    let (sub, file) = match command {
        Command::Run(_) => ("run", Some("runcard")),
        Command::Analyse(_) => ("analyse", Some("runcard")),
        Command::Sweep(_) => ("sweep", Some("runcard")),
        Command::Sample(a) => ("sample", a.config.is_some().then_some("runcard")),
        Command::Train(a) if a.resume.is_some() => ("train", Some("checkpoint")),
        Command::Train(a) => ("train", a.config.is_some().then_some("runcard")),
        Command::Curriculum(_) => ("curriculum", Some("runcard")),
    };
    let source = ParameterSource {
        matches: matches.subcommand_matches(sub),
        command: definition.find_subcommand(sub),
        file,
    };
    // `sample` keeps its measurements in memory until the report is written: a second
    // signal (as `timeout` sends) still lets it write them; a third ends it at once.
    let fatal_signal = if matches!(command, Command::Sample(_)) {
        3
    } else {
        2
    };
    let signals = match Signals::install(fatal_signal) {
        Ok(s) => s,
        Err(e) => {
            print_error(&e, &source);
            return ExitCode::FAILURE;
        }
    };
    let Some(m) = source.matches else {
        return ExitCode::FAILURE;
    };
    let result = match command {
        Command::Run(args) => ranks
            .require_single("run")
            .and_then(|()| study::run_study(args, &signals)),
        Command::Analyse(args) => ranks
            .require_single("analyse")
            .and_then(|()| study::run_analyse(args)),
        Command::Sweep(args) => study::run_sweep(args, &signals, &ranks),
        Command::Sample(args) => sample::run_sample(args, m, &signals, &ranks),
        Command::Train(args) => train::run_train(args, m, &signals, &ranks),
        Command::Curriculum(args) => ranks
            .require_single("curriculum")
            .and_then(|()| train::run_curriculum(args, &signals)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if ranks.shared.size() > 1 {
                eprint!("rank {}: ", ranks.shared.rank());
            }
            print_error(&e, &source);
            ranks.abort_others();
            ExitCode::FAILURE
        }
    }
}
