//! Tensor storage kept from one training step for the next.
//!
//! A training step records the same operations on tensors of the same shapes every
//! time. When a step is over, its tape, its gradients and its prediction hand their
//! large tensors back ([`recycle`]), and the next step's matrix products, softmaxes
//! and ReLU masks take their outputs from them ([`take`]) instead of allocating new
//! storage (and new reference counts) each time. Each thread keeps its own store for
//! each element type, of at most [`CAPACITY`] tensors.

use super::Tensor;
use crate::Float;
use ndarray::{ArcArray, ArrayD, IxDyn};
use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::mem::MaybeUninit;

/// The most tensors a thread keeps per element type.
const CAPACITY: usize = 32;

/// Smaller tensors are not kept: a fresh one costs about as little as finding one.
const MIN_LEN: usize = 256;

thread_local! {
    static F32: RefCell<Vec<ArcArray<f32, IxDyn>>> = const { RefCell::new(Vec::new()) };
    static F64: RefCell<Vec<ArcArray<f64, IxDyn>>> = const { RefCell::new(Vec::new()) };
    /// Index buffers (max pooling's saved maxima), kept as the tensors are.
    static INDICES: RefCell<Vec<Vec<u32>>> = const { RefCell::new(Vec::new()) };
}

/// Calls `f` with this thread's store for `F` (`None` while the thread is ending).
fn with_store<F: Float, R>(f: impl FnOnce(&mut Vec<ArcArray<F, IxDyn>>) -> R) -> Option<R> {
    fn open<T: 'static, F: Float, R>(
        store: &RefCell<Vec<ArcArray<T, IxDyn>>>,
        f: impl FnOnce(&mut Vec<ArcArray<F, IxDyn>>) -> R,
    ) -> Option<R> {
        let mut store = store.try_borrow_mut().ok()?;
        let store: &mut dyn Any = &mut *store;
        store.downcast_mut().map(f)
    }
    if TypeId::of::<F>() == TypeId::of::<f32>() {
        F32.try_with(|store| open(store, f)).ok().flatten()
    } else {
        F64.try_with(|store| open(store, f)).ok().flatten()
    }
}

/// Kept storage for a tensor of `shape`, when there is some. Its values are
/// unspecified (left from an earlier step): the caller writes every element. Stored
/// row-major and contiguously, and not shared with any other tensor.
pub(crate) fn take<F: Float>(shape: &[usize]) -> Option<Tensor<F>> {
    let len: usize = shape.iter().product();
    if len < MIN_LEN {
        return None;
    }
    let kept = with_store::<F, _>(|store| {
        let i = store.iter().rposition(|a| a.len() == len)?;
        Some(store.swap_remove(i))
    })??;
    kept.into_shape_with_order(IxDyn(shape))
        .ok()
        .map(Tensor::from_arc)
}

/// A tensor of `shape` whose elements `fill` writes (row-major): on kept storage when
/// there is some (holding values of an earlier step), else on fresh storage that is
/// not zeroed first. For the outputs the training loop makes every step (matrix
/// products, the fused ReLU's mask): zeroing fresh storage on each pool miss cost W2
/// about 5% (docs/performance.md). The tests poison kept storage with NaN, so that a
/// `fill` that skips an element shows.
///
/// # Safety
/// `fill` must write every element of the slice it is given, each with an
/// initialised value, and must not read it.
pub(crate) unsafe fn filled_uninit<F: Float>(
    shape: &[usize],
    fill: impl FnOnce(&mut [MaybeUninit<F>]),
) -> Tensor<F> {
    if let Some(mut kept) = take::<F>(shape) {
        let values: *mut [F] = kept.as_mut_slice();
        // SAFETY: MaybeUninit<F> has F's layout, and the caller writes only
        // initialised values, so every element stays initialised.
        fill(unsafe { &mut *(values as *mut [MaybeUninit<F>]) });
        return kept;
    }
    let len = shape.iter().product();
    let mut fresh = Vec::with_capacity(len);
    fill(&mut fresh.spare_capacity_mut()[..len]);
    // SAFETY: the caller has initialised all `len` elements.
    unsafe { fresh.set_len(len) };
    Tensor::from_array(ArrayD::from_shape_vec(IxDyn(shape), fresh).expect("len values"))
}

/// Storage for a result of `shape` whose every element the caller then writes: kept
/// storage (values of an earlier step) when there is some, else zeros. For kernels
/// that write their output in parts, on several threads ([`filled_uninit`]'s
/// storage cannot be handed out that way without more `unsafe`).
pub(crate) fn reused<F: Float>(shape: &[usize]) -> Tensor<F> {
    take(shape).unwrap_or_else(|| Tensor::zeros(shape))
}

/// Calls `f` with a scratch buffer of `len` values on kept storage (their values
/// unspecified: `f` writes what it reads), and keeps the storage again afterwards.
/// Each thread has its own, so the helpers of a training team reuse theirs from one
/// step to the next.
pub(crate) fn with_scratch<F: Float, R>(len: usize, f: impl FnOnce(&mut [F]) -> R) -> R {
    let mut buffer = reused::<F>(&[len]);
    let result = f(buffer.as_mut_slice());
    recycle(buffer);
    result
}

/// Keeps `tensor`'s storage for a later [`take`] when nothing else shares it, it is
/// large enough and contiguous, and the store has room; otherwise drops it.
pub(crate) fn recycle<F: Float>(tensor: Tensor<F>) {
    let array = tensor.data;
    if array.len() >= MIN_LEN && array.is_standard_layout() && array.is_unique() {
        with_store::<F, _>(|store| {
            if store.len() < CAPACITY {
                store.push(array);
            }
        });
    }
}

/// `len` indices on kept storage when there is some (values of an earlier step: the
/// caller writes every one), else zeros.
pub(crate) fn indices(len: usize) -> Vec<u32> {
    let kept = (len >= MIN_LEN)
        .then(|| {
            INDICES
                .try_with(|store| {
                    let mut store = store.try_borrow_mut().ok()?;
                    let i = store.iter().rposition(|v| v.len() == len)?;
                    Some(store.swap_remove(i))
                })
                .ok()
                .flatten()
        })
        .flatten();
    kept.unwrap_or_else(|| vec![0; len])
}

/// Keeps an index buffer for a later [`indices`] of its length, when it is large
/// enough and the store has room.
pub(crate) fn recycle_indices(buffer: Vec<u32>) {
    if buffer.len() >= MIN_LEN {
        let _ = INDICES.try_with(|store| {
            if let Ok(mut store) = store.try_borrow_mut()
                && store.len() < CAPACITY
            {
                store.push(buffer);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_comes_back_only_when_no_other_tensor_shares_it() {
        let t = Tensor::<f32>::full(&[64, 32], 7.0);
        let address = t.as_slice().unwrap().as_ptr();
        let view = t.clone();
        recycle(t);
        // Shared with `view`: not kept.
        assert!(take::<f32>(&[2048]).is_none());
        recycle(view);
        // Now kept, and handed out again under another shape of the same size.
        let again = take::<f32>(&[32, 64]).expect("kept");
        assert_eq!(again.shape(), &[32, 64]);
        assert_eq!(again.as_slice().unwrap().as_ptr(), address);
        // Other element types and sizes do not take it.
        recycle(again);
        assert!(take::<f64>(&[32, 64]).is_none());
        assert!(take::<f32>(&[2047]).is_none());
    }

    #[test]
    fn operations_write_every_element_of_kept_storage() {
        // Every kept buffer of the shapes below holds NaN: no result may show one.
        let poison = |shape: &[usize]| {
            for _ in 0..4 {
                recycle(Tensor::<f64>::full(shape, f64::NAN));
            }
        };
        let a = Tensor::<f64>::rand_uniform(&[40, 30], -1.0, 1.0, 1).unwrap();
        let b = Tensor::<f64>::rand_uniform(&[30, 50], -1.0, 1.0, 2).unwrap();
        poison(&[40, 50]);
        let product = a.matmul(&b).unwrap().to_vec();
        let first: f64 = (0..30).map(|k| a.to_vec()[k] * b.to_vec()[k * 50]).sum();
        assert!((product[0] - first).abs() < 1e-12 && product.iter().all(|v| v.is_finite()));
        poison(&[40, 30]);
        let softmax = a.softmax(1).unwrap().sum(&[1], false).unwrap().to_vec();
        assert!(softmax.iter().all(|s| (s - 1.0).abs() < 1e-12));
        poison(&[30, 40]);
        assert!(a.t().unwrap().log_softmax(0).unwrap().all_finite());
        // The fused layer's mask, against linear then relu.
        let tape = crate::Tape::new();
        let (x, w) = (tape.param(a.clone()), tape.param(b.t().unwrap()));
        poison(&[40, 50]);
        let fused = x
            .linear_relu(w, None)
            .unwrap()
            .sum(&[], false)
            .unwrap()
            .backward()
            .unwrap();
        let plain = x
            .linear(w, None)
            .unwrap()
            .relu()
            .sum(&[], false)
            .unwrap()
            .backward()
            .unwrap();
        assert_eq!(
            fused.wrt(w).unwrap().to_vec(),
            plain.wrt(w).unwrap().to_vec()
        );
        assert_eq!(
            fused.wrt(x).unwrap().to_vec(),
            plain.wrt(x).unwrap().to_vec()
        );
    }

    #[test]
    fn index_buffers_come_back_by_length() {
        let buffer = indices(1000);
        assert!(buffer.iter().all(|&i| i == 0), "fresh storage is zeroed");
        let address = buffer.as_ptr();
        recycle_indices(buffer);
        let other = indices(999);
        assert_ne!(other.as_ptr(), address);
        let again = indices(1000);
        assert_eq!(again.as_ptr(), address);
        recycle_indices(vec![7; 10]);
        assert_eq!(indices(10), vec![0; 10], "small buffers are not kept");
    }

    #[test]
    fn small_and_strided_tensors_are_not_kept() {
        let small = Tensor::<f64>::full(&[10], 1.0);
        recycle(small);
        assert!(take::<f64>(&[10]).is_none());
        let strided = Tensor::<f64>::full(&[64, 32], 1.0).t().unwrap();
        recycle(strided);
        assert!(take::<f64>(&[32, 64]).is_none());
    }
}
