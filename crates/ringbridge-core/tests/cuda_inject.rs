//! `RINGBRIDGE_INJECT_FAULT` forces transport failures (the GPU suite uses it to check `auto`'s
//! fallback on a host where everything works). Its own test binary: the variable is
//! process-wide and would leak into the other selection tests.

use ringbridge_core::backend::cuda::choose_transport;
use ringbridge_core::Error;

#[test]
fn injected_faults_force_the_fallback() {
    // The same injection the GPU suite uses to check fallback on a host where all work.
    std::env::set_var("RINGBRIDGE_INJECT_FAULT", "mapped, managed");
    let outcome = choose_transport("auto", Ok::<_, Error>);
    std::env::remove_var("RINGBRIDGE_INJECT_FAULT");
    let (_, name, reason) = outcome.unwrap();
    assert_eq!(name, "dma");
    assert!(reason.contains("injected"), "{reason}");
    // hybrid maps the host's slots as mapped does: a mapped fault fails it too.
    std::env::set_var("RINGBRIDGE_INJECT_FAULT", "mapped");
    let hybrid = choose_transport("hybrid", Ok::<_, Error>);
    std::env::remove_var("RINGBRIDGE_INJECT_FAULT");
    let err = hybrid.unwrap_err().to_string();
    assert!(err.contains("CUDA_ERROR_INVALID_VALUE (injected by RINGBRIDGE_INJECT_FAULT for 'mapped')"), "{err}");
}
