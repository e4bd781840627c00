//! Typed positions: a server's and an alias's place in the config.
//!
//! Servers and aliases are numbered by their order in the file, and the
//! decision keeps its state in vectors in that order. Both numbers used to
//! be bare `usize`, so nothing stopped a server's number from indexing the
//! aliases. [`ServerId`] and [`AliasId`] are distinct types, and [`IdVec`]
//! is a vector that only takes its own kind of id. Names (server ids,
//! alias names) are what outlives a reload or a restart; these numbers
//! hold only within one config.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Index, IndexMut};

use super::{Alias, Server};

/// A position in a config's list: the trait [`IdVec`] is indexed by.
pub trait Id: Copy {
    fn from_index(index: usize) -> Self;
    fn index(self) -> usize;
}

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(u32);

        impl Id for $name {
            fn from_index(index: usize) -> Self {
                $name::new(index)
            }
            fn index(self) -> usize {
                self.0 as usize
            }
        }

        impl $name {
            /// The id of the `index`-th entry (from 0).
            pub const fn new(index: usize) -> Self {
                // A config has far fewer than 2^32 servers or aliases (it is
                // a file an operator writes); more is a bug, not an input.
                assert!(index <= u32::MAX as usize, "fewer than 2^32 entries");
                $name(index as u32)
            }
            /// Its position in the config's list.
            pub(crate) const fn index(self) -> usize {
                self.0 as usize
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
    };
}

id!(
    /// A server: its position in [`super::Config::servers`].
    ServerId
);
id!(
    /// An alias: its position in [`super::Config::aliases`].
    AliasId
);

/// The config's lists indexed by their own kind of id (as a `Vec` and as a
/// slice: indexing a `Vec` does not fall back to its slice's impls).
macro_rules! index_by {
    ($id:ident, $t:ty) => {
        impl Index<$id> for [$t] {
            type Output = $t;
            fn index(&self, id: $id) -> &$t {
                &self[id.index()]
            }
        }

        impl Index<$id> for Vec<$t> {
            type Output = $t;
            fn index(&self, id: $id) -> &$t {
                &self[id.index()]
            }
        }
    };
}

index_by!(ServerId, Server);
index_by!(AliasId, Alias);

/// A vector with one entry per server or per alias, indexed by its own kind
/// of id only.
#[derive(Clone, PartialEq, Eq)]
pub struct IdVec<I, T> {
    items: Vec<T>,
    id: PhantomData<fn(I) -> I>,
}

impl<I: Id, T> IdVec<I, T> {
    /// `n` copies of `value` (one per server or per alias).
    pub(crate) fn filled(value: T, n: usize) -> Self
    where
        T: Clone,
    {
        vec![value; n].into()
    }

    pub(crate) fn iter(&self) -> std::slice::Iter<'_, T> {
        self.items.iter()
    }

    /// Every entry with its id, in order.
    pub(crate) fn iter_enumerated(&self) -> impl Iterator<Item = (I, &T)> {
        self.items.iter().enumerate().map(|(i, t)| (I::from_index(i), t))
    }
}

impl<I, T> From<Vec<T>> for IdVec<I, T> {
    fn from(items: Vec<T>) -> Self {
        IdVec { items, id: PhantomData }
    }
}

impl<I, T> Default for IdVec<I, T> {
    fn default() -> Self {
        Vec::new().into()
    }
}

impl<I: Id, T> Index<I> for IdVec<I, T> {
    type Output = T;
    fn index(&self, id: I) -> &T {
        &self.items[id.index()]
    }
}

impl<I: Id, T> IndexMut<I> for IdVec<I, T> {
    fn index_mut(&mut self, id: I) -> &mut T {
        &mut self.items[id.index()]
    }
}

impl<'a, I: Id, T> IntoIterator for &'a IdVec<I, T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

impl<I, T: fmt::Debug> fmt::Debug for IdVec<I, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.items.fmt(f)
    }
}
