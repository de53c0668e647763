//! Any bytes given to `Event::decode` are decoded or refused, never a panic; what decodes
//! encodes back to bytes that decode to the same event, and applies or is refused whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use valori_kernel::{Event, Kernel};

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = Event::decode(data) {
        let encoded = event.encode();
        assert_eq!(Event::decode(&encoded).as_ref(), Ok(&event));
        let mut kernel = Kernel::new();
        let before = kernel.state_hash();
        if kernel.apply(&event).is_err() {
            assert_eq!(
                kernel.state_hash(),
                before,
                "a refused event changed the state"
            );
        }
    }
});
