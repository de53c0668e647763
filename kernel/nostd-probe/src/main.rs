//! A bare-metal style binary that links the kernel and exercises it, for `cargo check` only.
#![no_std]
#![no_main]

extern crate alloc;

use core::alloc::{GlobalAlloc, Layout};
use valori_kernel::{Event, Fixed, Kernel, NewRecord, SearchParams};

/// Never used at run time: the probe is only type-checked.
struct NoAlloc;

unsafe impl GlobalAlloc for NoAlloc {
    unsafe fn alloc(&self, _layout: Layout) -> *mut u8 {
        core::ptr::null_mut()
    }
    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}

#[global_allocator]
static ALLOCATOR: NoAlloc = NoAlloc;

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[no_mangle]
pub extern "C" fn valori_probe() -> u64 {
    let mut kernel = Kernel::new();
    let event = Event::Insert {
        collection: alloc::string::String::from("default"),
        records: alloc::vec![NewRecord {
            vector: alloc::vec![Fixed::ONE; 4],
            tag: 1,
            metadata: None,
        }],
    };
    let _ = kernel.apply(&event);
    let params = SearchParams {
        k: 1,
        tag: None,
        ef: None,
    };
    let hits = kernel.search("default", &[Fixed::ONE; 4], &params);
    let snapshot = kernel.snapshot();
    let _ = Kernel::restore(&snapshot);
    hits.map(|h| h.len() as u64).unwrap_or(0) + u64::from(kernel.state_hash()[0])
}
