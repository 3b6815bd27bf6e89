//! One `wit-bindgen` module per hook world, so a plugin exports exactly the hooks it names. The shared
//! `types` and `host` interfaces are generated once, in `base`, and reused by the others.

#![allow(missing_docs, clippy::all)]

pub mod base {
    wit_bindgen::generate!({
        path: "../wit",
        world: "types-only",
        generate_all,
    });
}

pub mod authorize_connect {
    wit_bindgen::generate!({
        path: "../wit",
        world: "hook-authorize-connect",
        with: {
            "ioplex:plugin/types@0.1.0": crate::bindings::base::ioplex::plugin::types,
            "ioplex:plugin/host@0.1.0": crate::bindings::base::ioplex::plugin::host,
        },
        pub_export_macro: true,
        export_macro_name: "export",
    });
}

pub mod authorize_join {
    wit_bindgen::generate!({
        path: "../wit",
        world: "hook-authorize-join",
        with: {
            "ioplex:plugin/types@0.1.0": crate::bindings::base::ioplex::plugin::types,
            "ioplex:plugin/host@0.1.0": crate::bindings::base::ioplex::plugin::host,
        },
        pub_export_macro: true,
        export_macro_name: "export",
    });
}

pub mod transform_event {
    wit_bindgen::generate!({
        path: "../wit",
        world: "hook-transform-event",
        with: {
            "ioplex:plugin/types@0.1.0": crate::bindings::base::ioplex::plugin::types,
            "ioplex:plugin/host@0.1.0": crate::bindings::base::ioplex::plugin::host,
        },
        pub_export_macro: true,
        export_macro_name: "export",
    });
}

pub mod transform_broadcast {
    wit_bindgen::generate!({
        path: "../wit",
        world: "hook-transform-broadcast",
        with: {
            "ioplex:plugin/types@0.1.0": crate::bindings::base::ioplex::plugin::types,
            "ioplex:plugin/host@0.1.0": crate::bindings::base::ioplex::plugin::host,
        },
        pub_export_macro: true,
        export_macro_name: "export",
    });
}
