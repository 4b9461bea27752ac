//! The one integration-test binary: one module per area of the service.

mod propagate;
