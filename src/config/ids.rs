//! Typed indices into the configuration's lists, so a provider's index cannot be passed where a
//! consumer's is meant. Each is made only by the validator (or by enumerating the list it
//! indexes) and read back with `index()`.

macro_rules! id {
    ($name:ident, $what:literal) => {
        #[doc = concat!("The index of a ", $what, ".")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub usize);

        impl $name {
            /// The position in its list.
            pub fn index(self) -> usize {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id!(ProviderId, "`[[providers]]` entry");
id!(ConsumerId, "`[[consumers]]` entry");
id!(RouteId, "`[[routes]]` entry");
id!(UpstreamId, "`[[upstreams]]` entry");
