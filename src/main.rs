//! The `ember` binary: a thin shell over `ember::cli`.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    ember::cli::run(&args)
}
