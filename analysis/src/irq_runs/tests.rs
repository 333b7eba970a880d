use super::*;

fn entry(t_ns: u64, cpu: u32, now_ns: i64) -> TimerEvent {
    TimerEvent::Entry { t_ns, cpu, now_ns }
}

fn exit(t_ns: u64, cpu: u32) -> TimerEvent {
    TimerEvent::Exit { t_ns, cpu }
}

fn start(t_ns: u64, expires_ns: i64) -> TimerEvent {
    TimerEvent::Start { t_ns, expires_ns }
}

#[test]
fn a_periodic_timer_is_one_callback_per_run() {
    let mut ev = Vec::new();
    for k in 0..5u64 {
        let t = 1_000_000 * (k + 1);
        ev.push(entry(t, 0, t as i64 + 10));
        ev.push(exit(t + 500, 0));
        ev.push(start(t + 600, t as i64 + 1_000_000));
    }
    let runs = group_runs(&mut ev);
    assert_eq!(runs.len(), 5);
    assert!(runs
        .iter()
        .all(|r| r.callbacks() == 1 && r.duration_ns() == 500));
    // The first had no start seen: lateness 0; the others 10 ns.
    assert_eq!(runs[0].late_ns(), 0);
    assert_eq!(runs[1].late_ns(), 10);
}

#[test]
fn a_storm_after_a_stall_is_one_run_with_the_pause_as_lateness() {
    // Armed for t=1 ms, stalled 10 s: 10 000 callbacks with one `now`.
    let period = 1_000_000i64;
    let now = 10_001_000_000i64;
    let mut ev = vec![start(0, period)];
    let mut t = 10_001_000_100u64;
    for k in 0..10_000i64 {
        ev.push(entry(t, 1, now));
        ev.push(exit(t + 8, 1));
        ev.push(start(t + 9, period * (k + 2)));
        t += 10;
    }
    // The next pass, one period later.
    ev.push(entry(t + 1_000_000, 1, now + period));
    let runs = group_runs(&mut ev);
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].callbacks(), 10_000);
    assert_eq!(runs[0].duration_ns(), 10 * 9_999 + 8);
    assert_eq!(runs[0].late_ns(), (now - period) as u64);
    assert_eq!(runs[1].callbacks(), 1);
    let events = HostEvents {
        sw_runs: runs,
        hv_ns: vec![10_001_000_000],
        sw_counted: 10_001,
        sw_sampled: 10_001,
        hv_counted: Some(1),
        ..HostEvents::default()
    };
    assert!(events.complete());
    assert_eq!(
        events.callbacks_between(10_000_000_000, 11_000_000_000),
        10_002
    );
    let longest = events.longest_run(0, u64::MAX).unwrap();
    assert_eq!(longest.callbacks(), 10_000);
    let cost = cost_per_callback_ns(&longest, 100).unwrap();
    assert!((cost - 10.0).abs() < 0.01, "{cost}");
}

#[test]
fn a_lost_start_leaves_the_lateness_unknown_not_stale() {
    // Armed for 1 ms, run at 1 ms + 10 ns; the restart for 2 ms lost.
    let mut ev = vec![
        start(0, 1_000_000),
        entry(1_000_010, 0, 1_000_010),
        exit(1_000_020, 0),
        entry(2_000_010, 0, 2_000_010),
    ];
    let runs = group_runs(&mut ev);
    assert_eq!(
        runs.iter().map(IrqRun::late_ns).collect::<Vec<_>>(),
        [10, 0]
    );
}

#[test]
fn times_are_made_relative_to_the_epoch() {
    assert_eq!(entry(5, 0, 1).since(3).t_ns(), 2);
    assert_eq!(exit(1, 0).since(3).t_ns(), 0);
    assert_eq!(start(7, 9).since(7), start(0, 9));
}

#[test]
fn same_now_on_two_cpus_is_two_runs() {
    let mut ev = vec![entry(10, 0, 5), entry(11, 1, 5), entry(12, 0, 5)];
    let runs = group_runs(&mut ev);
    assert_eq!(
        runs.iter().map(IrqRun::callbacks).collect::<Vec<_>>(),
        [1, 1, 1]
    );
}

#[test]
fn losses_are_named_and_bad_input_rejected() {
    let e = HostEvents {
        sw_runs: vec![IrqRun(5, 2, 0, 0), IrqRun(3, 1, 0, 0)],
        hv_ns: vec![],
        sw_counted: 10,
        sw_sampled: 3,
        hv_counted: None,
        ..HostEvents::default()
    };
    assert!(e.loss_note().unwrap().contains("sampled 3 of 10"));
    assert!(e.validate().unwrap_err().contains("not sorted"));
    let zero = HostEvents {
        sw_runs: vec![IrqRun(1, 0, 0, 0)],
        ..HostEvents::default()
    };
    assert!(zero.validate().is_err());
    assert!(HostEvents::default().validate().is_ok());
    assert_eq!(cost_per_callback_ns(&IrqRun(0, 3, 30, 0), 100), None);
}
