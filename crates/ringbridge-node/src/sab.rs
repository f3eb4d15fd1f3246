//! A JavaScript `SharedArrayBuffer` as a region's memory: the `Uint8Array` view napi-rs hands us
//! holds a reference, which keeps the buffer alive for as long as the region lives.

use napi::bindgen_prelude::Uint8Array;
use ringbridge_core::protocol::RegionLayout;
use ringbridge_core::transport::Region;
use std::sync::Arc;

use crate::error::{invalid, to_js, Result};

/// Alignment of a region inside its SharedArrayBuffer. V8 does not page-align SAB memory, and
/// GPU registration pins whole pages: starting at a page boundary keeps every pinned page
/// owned by this buffer alone (two host registrations may not share a page: the second one
/// fails as already registered).
pub const REGION_PAGE: usize = ringbridge_core::transport::REGION_PAGE;

struct KeepAlive(#[allow(dead_code)] Uint8Array);

/// Where the region starts inside `view` (bytes from the view's start).
pub fn region_offset(view: &Uint8Array) -> usize {
    let addr = view.as_ptr() as usize;
    addr.next_multiple_of(REGION_PAGE) - addr
}

/// Builds a region over the page-aligned part of `view`.
pub fn region_over(mut view: Uint8Array, layout: RegionLayout) -> Result<(Arc<Region>, usize)> {
    let offset = region_offset(&view);
    let len = view.len();
    // Whole pages: a GPU transport registers them, and they must belong to this buffer alone.
    let needed = layout.total_bytes.next_multiple_of(REGION_PAGE);
    if len < offset + needed {
        return Err(invalid(format!(
            "shared memory of {len} bytes is too small: the rings need {needed} bytes of whole pages from \
             offset {offset} (allocate total_bytes rounded up to {REGION_PAGE}, plus {REGION_PAGE})"
        )));
    }
    // SAFETY: napi-rs documents `as_mut` as unsynchronised with JS; here JS and the kernel only
    // touch the region through the protocol (atomics and owned slots, I2/I3), which is the
    // contract `Region::from_external` states. The pointer stays valid while `KeepAlive` holds
    // the view's reference, and the region owns that keep-alive.
    let base = unsafe { view.as_mut().as_mut_ptr().add(offset) };
    // SAFETY: `base..base + total_bytes` lies inside the view (checked above) and outlives the
    // region through the keep-alive box.
    let region = unsafe { Region::from_external(base, len - offset, layout, Box::new(KeepAlive(view))) }.map_err(to_js)?;
    Ok((region, offset))
}
