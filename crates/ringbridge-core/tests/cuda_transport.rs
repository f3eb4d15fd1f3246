//! Transport selection of the CUDA backend (`choose_transport`), with set-up failures forced:
//! runs without a GPU. The GPU runs of the same code are in `gpu_cuda.rs`.

use ringbridge_core::backend::cuda::choose_transport;
use ringbridge_core::{Error, ErrorCode};

fn fail(call: &'static str) -> Error {
    Error::Cuda { call, message: "CUDA_ERROR_INVALID_VALUE".into() }
}

#[test]
fn auto_takes_mapped_when_everything_works() {
    let (t, name, reason) = choose_transport("auto", Ok::<_, Error>).unwrap();
    assert_eq!((t, name), ("mapped", "mapped"));
    assert!(reason.starts_with("auto: mapped"), "{reason}");
}

#[test]
fn hybrid_is_chosen_by_name() {
    let (t, name, reason) = choose_transport("hybrid", Ok::<_, Error>).unwrap();
    assert_eq!((t, name, reason.as_str()), ("hybrid", "hybrid", "hybrid: asked for"));
}

#[test]
fn auto_falls_back_like_wsl2_and_says_why() {
    // WSL2: mapped host allocation returns InvalidValue; managed lacks concurrent access.
    let (_, name, reason) = choose_transport("auto", |t| match t {
        "mapped" => Err(fail("cuMemHostRegister")),
        "managed" => Err(Error::BackendUnavailable { backend: "cuda/managed", reason: "no concurrent managed access".into() }),
        _ => Ok(()),
    })
    .unwrap();
    assert_eq!(name, "dma");
    assert!(reason.contains("mapped (cuMemHostRegister failed: CUDA_ERROR_INVALID_VALUE)"), "{reason}");
}

#[test]
fn auto_tries_in_latency_order_and_reports_every_failure() {
    let mut tried = Vec::new();
    let err = choose_transport("auto", |t| -> Result<(), Error> {
        tried.push(t);
        Err(fail("cuMemAlloc"))
    })
    .unwrap_err();
    assert_eq!(tried, ["mapped", "dma", "managed"]);
    assert_eq!(err.code(), ErrorCode::BackendUnavailable);
    let text = err.to_string();
    for t in ["mapped", "dma", "managed"] {
        assert!(text.contains(&format!("{t} (cuMemAlloc failed")), "{text}");
    }
}

#[test]
fn an_explicit_transport_reports_its_own_failure() {
    let err = choose_transport("dma", |_| -> Result<(), Error> { Err(fail("cuMemAlloc")) }).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Cuda);
    let (_, name, reason) = choose_transport("managed", |_| Ok::<_, Error>(())).unwrap();
    assert_eq!((name, reason.as_str()), ("managed", "managed: asked for"));
}

#[test]
fn unknown_transport_is_an_invalid_argument() {
    for bad in ["", "pcie", "Mapped"] {
        let err = choose_transport(bad, |_| Ok::<_, Error>(())).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument, "{bad:?}");
        assert!(err.to_string().contains("auto, hybrid, mapped, dma, managed"), "{err}");
    }
}
