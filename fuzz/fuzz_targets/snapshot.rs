//! Any bytes given to `Kernel::restore` restore a state or are refused, never a panic; a
//! restored state's own snapshot restores to the same state. The body decoder is also fed the
//! bytes directly: behind a checksum, a whole snapshot's body is rarely reached by mutation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use valori_kernel::{Kernel, GENESIS_CHAIN};

fuzz_target!(|data: &[u8]| {
    if let Ok(kernel) = Kernel::restore(data) {
        let again = Kernel::restore(&kernel.snapshot()).expect("a state's own snapshot restores");
        assert_eq!(again, kernel);
    }
    if let Ok(kernel) = Kernel::decode_state(data, 0, GENESIS_CHAIN) {
        let mut encoded = Vec::new();
        kernel.encode_state(&mut encoded);
        let again =
            Kernel::decode_state(&encoded, 0, GENESIS_CHAIN).expect("re-encoded state decodes");
        assert_eq!(again, kernel);
    }
});
