//! The methods every zero-copy view shares, written once.
//!
//! Each view is a `struct Name<T: AsRef<[u8]>> { buffer: T }` with its own `check`. Inside the
//! view's `impl<T: AsRef<[u8]>>` block, `view_methods!` adds `new_unchecked`, `new_checked` (its
//! documentation, which states what the frame's `check` guarantees, comes from the caller) and
//! `into_inner`, and optionally:
//!
//! - `as_bytes: LEN;` — `as_bytes` for a view of fixed length `LEN`;
//! - `session: field::HDR;` — `session`, SESSION from the header byte at that index.

/// Generates the shared methods of a view inside its `impl` block; see the module documentation.
macro_rules! view_methods {
    (
        $(#[doc = $checked_doc:literal])+
        new_checked;
        $(as_bytes: $len:expr;)?
        $(session: $header:expr;)?
    ) => {
        /// A view without checks; accessors may panic unless [`Self::check`] succeeds.
        pub const fn new_unchecked(buffer: T) -> Self {
            Self { buffer }
        }

        $(#[doc = $checked_doc])+
        pub fn new_checked(buffer: T) -> Result<Self, $crate::Error> {
            let frame = Self::new_unchecked(buffer);
            frame.check()?;
            Ok(frame)
        }

        /// The underlying buffer.
        pub fn into_inner(self) -> T {
            self.buffer
        }

        $(
            /// The command's bytes.
            pub fn as_bytes(&self) -> &[u8] {
                &self.buffer.as_ref()[..$len]
            }
        )?

        $(
            /// SESSION.
            pub fn session(&self) -> $crate::Session {
                $crate::Session::from_header(self.buffer.as_ref()[$header])
            }
        )?
    };
}

pub(crate) use view_methods;
