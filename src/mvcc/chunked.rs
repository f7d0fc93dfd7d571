//! A growable array made of fixed-size chunks.
//!
//! A `Vec` that doubles carries up to half its capacity as slack, and with
//! 100,000 keys that slack alone would cost several bytes per key in each
//! table. Chunks of `N` slots bound the slack to one chunk and never move
//! existing elements, so growth costs no copy of the table.

pub(crate) struct ChunkedVec<T, const N: usize> {
    /// Invariant: every chunk but the last holds exactly `N` elements, and
    /// each chunk's capacity is exactly `N`.
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T, const N: usize> Default for ChunkedVec<T, N> {
    fn default() -> Self {
        ChunkedVec { chunks: Vec::new(), len: 0 }
    }
}

impl<T, const N: usize> ChunkedVec<T, N> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends and returns the new element's index.
    pub(crate) fn push(&mut self, value: T) -> usize {
        if self.len.is_multiple_of(N) {
            self.chunks.push(Vec::with_capacity(N));
        }
        let last = self.chunks.last_mut().expect("a chunk was just ensured");
        last.push(value);
        self.len += 1;
        self.len - 1
    }

    pub(crate) fn get(&self, index: usize) -> &T {
        &self.chunks[index / N][index % N]
    }

    pub(crate) fn get_mut(&mut self, index: usize) -> &mut T {
        &mut self.chunks[index / N][index % N]
    }

    /// Bytes of the chunk table and the chunks' slots (not what the elements
    /// own on the heap).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.chunks.capacity() * size_of::<Vec<T>>() + self.chunks.len() * N * size_of::<T>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_stay_put_across_chunks() {
        let mut v: ChunkedVec<u32, 4> = ChunkedVec::default();
        for i in 0..10 {
            assert_eq!(v.push(i * 3), i as usize);
        }
        assert_eq!(v.len(), 10);
        assert_eq!(*v.get(9), 27);
        *v.get_mut(5) = 1;
        assert_eq!(*v.get(5), 1);
        assert_eq!(*v.get(4), 12);
    }
}
