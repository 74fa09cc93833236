//! Regrouping lists of items into lists of a bounded length, moving each
//! item at most once: the checkpoint writer gathers the status updates of
//! many batches and sends them to the agent in messages of a bounded size.

/// `lists`, in order, as lists of at most `max` items: the one list as it
/// is when it fits, else each item moved once (never cloned). `max` is
/// above 0.
pub fn regroup<T>(mut lists: Vec<Vec<T>>, max: usize) -> Vec<Vec<T>> {
    if lists.len() == 1 && !lists[0].is_empty() && lists[0].len() <= max {
        return lists;
    }
    let mut left: usize = lists.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(left.div_ceil(max));
    let mut current = Vec::with_capacity(left.min(max));
    for item in lists.drain(..).flatten() {
        current.push(item);
        left -= 1;
        if current.len() == max {
            out.push(std::mem::replace(
                &mut current,
                Vec::with_capacity(left.min(max)),
            ));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::regroup;

    #[test]
    fn one_list_that_fits_is_kept_whole_and_others_are_cut_in_order() {
        let one = vec![vec![1, 2, 3]];
        let ptr = one[0].as_ptr();
        let kept = regroup(one, 4);
        assert_eq!(kept, [vec![1, 2, 3]]);
        assert_eq!(kept[0].as_ptr(), ptr, "the list itself, not a copy");

        assert_eq!(
            regroup(vec![vec![1, 2], vec![3], vec![4, 5, 6, 7, 8]], 3),
            [vec![1, 2, 3], vec![4, 5, 6], vec![7, 8]]
        );
        assert_eq!(regroup(vec![vec![1, 2, 3, 4]], 2), [vec![1, 2], vec![3, 4]]);
        assert_eq!(regroup(Vec::<Vec<u8>>::new(), 2), Vec::<Vec<u8>>::new());
        assert_eq!(
            regroup(vec![Vec::<u8>::new(), vec![]], 2),
            Vec::<Vec<u8>>::new()
        );
    }
}
