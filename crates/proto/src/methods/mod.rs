//! Typed params and results, one module per service. Each method is a unit type that
//! implements [`Method`], tying its wire name to its params and result types so that a
//! server route and a client call cannot disagree about either.
//!
//! Params are lenient about unknown fields (the original clients send some we ignore);
//! missing required fields and wrong types are refused by name.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

pub mod fs;
pub mod identity;
pub mod registry;
pub mod supervisor;
pub mod sys;

/// A protocol method: its wire name and the types of its params and result.
pub trait Method {
    /// The wire name, e.g. `fs.read`.
    const NAME: &'static str;
    /// What the request's `params` holds.
    type Params: Serialize + DeserializeOwned + Send + 'static;
    /// What a successful response's `result` holds.
    type Result: Serialize + DeserializeOwned + Send + 'static;
}

/// Params of a method that takes none.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NoParams {}

/// The `{"status": "..."}` result several mutating methods answer with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusResult {
    /// What was done, e.g. `registered`.
    pub status: String,
}

impl StatusResult {
    /// A result saying `status`.
    pub fn new(status: &str) -> Self {
        StatusResult {
            status: status.to_owned(),
        }
    }
}

macro_rules! method {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $params:ty, $result:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $ty;
        impl $crate::methods::Method for $ty {
            const NAME: &'static str = $name;
            type Params = $params;
            type Result = $result;
        }
    };
}
pub(crate) use method;
