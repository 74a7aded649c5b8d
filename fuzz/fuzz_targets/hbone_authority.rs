//! The HBONE `CONNECT` authority parser on arbitrary input: no panic, and an accepted
//! authority names a non-zero port and round-trips through its display form.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_hbone::authority::parse_authority;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(addr) = parse_authority(Some(s)) {
        assert_ne!(addr.port(), 0);
        assert_eq!(parse_authority(Some(&addr.to_string())), Ok(addr));
    }
});
