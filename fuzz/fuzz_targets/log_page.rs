//! Any bytes a follower gets as a log page are parsed, and each entry's chain hash and event
//! decoded and the event applied, or refused: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use valori_api::LogPage;
use valori_kernel::{Event, Kernel};

fuzz_target!(|data: &[u8]| {
    let Ok(page) = serde_json::from_slice::<LogPage>(data) else {
        return;
    };
    let mut kernel = Kernel::new();
    for entry in &page.entries {
        let Ok((_chain, bytes)) = entry.decode() else {
            return;
        };
        match Event::decode(&bytes) {
            Ok(event) => {
                let _ = kernel.apply(&event);
            }
            Err(_) => return,
        }
    }
});
