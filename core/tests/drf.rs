//! The example of the DRF paper (Ghodsi et al., NSDI 2011, section 4.1),
//! driven through the whole core: offers, accepts and declines.

use wasmos_core::Resources;
use wasmos_core::testing::{GIB, Harness, offered, task};

#[test]
fn drf_paper_example_gives_a_three_tasks_and_b_two() {
    let mut h = Harness::new();
    h.core.enable_audit();
    h.add_agent(9.0, 18 * GIB);
    let a = h.subscribe("A", "a");
    let b = h.subscribe("B", "b");
    let need_a = Resources::new(1.0, 4 * GIB, 0);
    let need_b = Resources::new(3.0, GIB, 0);
    let mut launched = [0usize; 2];
    let mut n = 0;
    // Each framework launches one task per offer and declines the rest with
    // no filter, until no offer is left (what remains fits no one).
    for _round in 0..100 {
        let mut progressed = false;
        for (i, (fw, need)) in [(&a, need_a), (&b, need_b)].into_iter().enumerate() {
            for offer in h.take_offers(fw) {
                progressed = true;
                if need.fits_in(&offered(&offer)) {
                    n += 1;
                    let spec = task(&format!("t{n}"), need.cpus(), need.mem);
                    h.accept(fw, &[&offer], vec![spec], Some(0.0)).unwrap();
                    launched[i] += 1;
                } else {
                    h.decline(fw, &[offer], Some(0.0)).unwrap();
                }
            }
        }
        if !progressed {
            break;
        }
    }
    assert_eq!(launched, [3, 2], "A runs 3 tasks, B runs 2");
    let share_a = h.core.allocator().framework_share(&a).unwrap();
    let share_b = h.core.allocator().framework_share(&b).unwrap();
    assert!((share_a - 2.0 / 3.0).abs() < 1e-9, "A's share {share_a}");
    assert!((share_b - 2.0 / 3.0).abs() < 1e-9, "B's share {share_b}");
    assert_eq!(h.core.take_audit_violations(), Vec::<String>::new());
}
