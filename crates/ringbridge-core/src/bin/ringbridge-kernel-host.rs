//! The kernel host of ringbridge's process isolation: started by a parent with a control socket
//! on stdin (see `ringbridge_core::isolate`); not meant to be run by hand.

fn main() {
    std::process::exit(ringbridge_core::isolate::child::serve_stdin());
}
