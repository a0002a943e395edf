//! A store image (a pre-copy's memory file between two daemons, a
//! recording's `StoreImage` event) fed arbitrary bytes, as a whole store
//! onto an empty one and as changes onto a small one: applying never
//! panics, and a store it builds is a whole tree, correctly charged, whose
//! own image rebuilds it.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use xenring::{Perm, PermKind};
use xenstored_lite::engine::store::Store;

fuzz_target!(|data: &[u8]| {
    let mut whole = Store::empty();
    if whole.apply_image(data).is_ok() {
        assert_eq!(whole.check(), Vec::<String>::new());
        let again = whole.image(None);
        let mut rebuilt = Store::empty();
        rebuilt.apply_image(&again).expect("our own image applies");
        assert_eq!(rebuilt.image(None), again);
    }
    let mut base = Store::new(0);
    let perms: Arc<[Perm]> = Arc::from(vec![Perm::new(PermKind::None, 1)]);
    for path in ["/local", "/local/domain", "/local/domain/1", "/vm"] {
        base.put_node(Arc::from(path), Arc::from(&b"v"[..]), Arc::clone(&perms));
    }
    if base.apply_image(data).is_ok() {
        assert_eq!(base.check(), Vec::<String>::new());
    }
});
