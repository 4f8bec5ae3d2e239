//! `onionnet`: parse the command line, dispatch, print errors with their chain.

use clap::Parser;
use onionnet::cli::{
    Cli, Command, bench, calibrate, cost, demo, detect, eval, export, fit, matching, models,
    patches, retrieve, study, train,
};

fn main() {
    // output piped into `head` and the like: end quietly when the reader goes, as other
    // command-line tools do, instead of panicking in `println!` (Rust ignores SIGPIPE)
    #[cfg(unix)]
    // SAFETY: restores the default disposition of one signal, before any thread starts
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    onionnet::alloc::keep_freed_memory();
    onionnet::cli::report_panics();
    let cli = Cli::parse();
    let device = match cli.device.init() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let result = match &cli.command {
        Command::Demo(a) => demo::run(a, &device),
        Command::Fit(a) => fit::run(a, &device),
        Command::Retrieve(a) => retrieve::run(a, &device),
        Command::Match(a) => matching::run(a, &device),
        Command::Models => models::run(),
        Command::Export(a) => export::run_export(a, &device),
        Command::Import(a) => export::run_import(a, &device),
        Command::Train(a) => train::run(a, &device),
        Command::Calibrate(a) => calibrate::run(a, &device),
        Command::Eval(a) => eval::run(a, &device),
        Command::Cost(a) => cost::run(a),
        Command::Bench(a) => bench::run(a, &device),
        Command::Study(a) => study::run_study(a, &device),
        Command::Patches(a) => patches::run(a, &device),
        Command::Detect(a) => detect::run(a, &device),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
