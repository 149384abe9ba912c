//! Poison: machine checks on consumption, the unit ladder, clearing through the driver write
//! path, and scrub reports.

use sim_core::machine::{
    BadRange, CrashOptions, Machine, MachineConfig, McKind, MemError, PoisonUnit,
};

const P: u64 = 0x10040;

fn machine(preset: &str) -> Machine {
    let mut cfg = MachineConfig::new(preset).unwrap();
    cfg.set("pmem", "1MiB").unwrap();
    let mut m = Machine::new(cfg).unwrap();
    m.write_durable(0x10000, &[0x11; 4096]).unwrap();
    m
}

fn load(m: &mut Machine, addr: u64, len: usize) -> Result<Vec<u8>, MemError> {
    let mut buf = vec![0; len];
    m.load(0, 1, addr, &mut buf).map(|_| buf)
}

#[test]
fn load_of_a_poisoned_line_is_a_machine_check_with_its_address_and_units() {
    let mut m = machine("optane-like");
    m.inject_poison(P + 3, 1).unwrap();
    let Err(MemError::MachineCheck(mc)) = load(&mut m, P + 8, 8) else {
        panic!("expected a machine check");
    };
    assert_eq!(mc.kind, McKind::ActionRequired);
    assert_eq!(mc.cpu, 1);
    assert_eq!(mc.addr, P);
    assert_eq!(mc.bytes_copied, 0);
    assert_eq!(mc.range(PoisonUnit::Consume), 0x10040..0x10080);
    assert_eq!(mc.range(PoisonUnit::Clear), 0x10000..0x10100);
    assert_eq!(mc.range(PoisonUnit::Badblocks), 0x10000..0x10200);
    assert_eq!(mc.range(PoisonUnit::Signal), 0x10000..0x11000);
    // Consumption puts the sector on the badblocks list (nfit_handle_mce).
    assert_eq!(m.badblocks(), vec![(0x10000 / 512, 1)]);
}

#[test]
fn a_load_running_into_poison_copies_the_bytes_before_it() {
    let mut m = machine("optane-like");
    m.inject_poison(P, 64).unwrap();
    let mut buf = [0u8; 128];
    let Err(MemError::MachineCheck(mc)) = m.load(0, 0, 0x10000, &mut buf) else {
        panic!("expected a machine check");
    };
    assert_eq!(mc.bytes_copied, 64);
    assert_eq!(buf[..64], [0x11; 64]);
}

#[test]
fn reads_elsewhere_are_unaffected() {
    let mut m = machine("optane-like");
    m.inject_poison(P, 64).unwrap();
    assert_eq!(load(&mut m, P - 64, 64).unwrap(), vec![0x11; 64]);
    assert_eq!(load(&mut m, P + 64, 64).unwrap(), vec![0x11; 64]);
    assert_eq!(load(&mut m, 0x10100, 256).unwrap(), vec![0x11; 256]);
}

#[test]
fn an_aligned_clear_unit_write_clears_poison() {
    let mut m = machine("optane-like");
    m.inject_poison(P, 64).unwrap();
    let (_, cleared) = m.pmem_write(0, 0, 0x10000, &[0x22; 256]).unwrap();
    assert_eq!(
        cleared,
        vec![BadRange {
            addr: 0x10000,
            len: 256
        }]
    );
    assert_eq!(load(&mut m, P, 64).unwrap(), vec![0x22; 64]);
    assert!(m.poisoned().is_empty());
}

#[test]
fn a_partial_write_does_not_clear_poison() {
    let mut m = machine("optane-like");
    m.inject_poison(P, 64).unwrap();
    // The poisoned line itself, but not its whole 256 B clear unit.
    let (_, cleared) = m.pmem_write(0, 0, P, &[0x22; 64]).unwrap();
    assert!(cleared.is_empty());
    // 256 bytes, but not aligned to the clear unit.
    let (_, cleared) = m.pmem_write(0, 0, P, &[0x22; 256]).unwrap();
    assert!(cleared.is_empty());
    // A plain store does not clear either.
    m.store(0, 0, P, &[0x33; 64]).unwrap();
    assert!(matches!(load(&mut m, P, 8), Err(MemError::MachineCheck(_))));
}

#[test]
fn cxl_clears_at_64_bytes() {
    let mut m = machine("cxl-like");
    m.inject_poison(P, 1).unwrap();
    let Err(MemError::MachineCheck(mc)) = load(&mut m, P, 8) else {
        panic!("expected a machine check");
    };
    assert_eq!(mc.range(PoisonUnit::Clear), P..P + 64);
    let (_, cleared) = m.pmem_write(0, 0, P, &[0x22; 64]).unwrap();
    assert_eq!(cleared, vec![BadRange { addr: P, len: 64 }]);
    assert_eq!(load(&mut m, P, 8).unwrap(), vec![0x22; 8]);
}

#[test]
fn scrub_reports_the_poisoned_range_once() {
    let mut m = machine("optane-like");
    m.inject_poison(0x20000, 1).unwrap();
    m.inject_poison(0x20080, 1).unwrap();
    m.inject_poison(0x30000, 200).unwrap();
    // Action-optional notification of just the first range, as `poison ... notify` does.
    assert_eq!(
        m.scrub(0x20000, 0x1000).unwrap(),
        vec![BadRange {
            addr: 0x20000,
            len: 256
        }]
    );
    assert_eq!(
        m.scrub_all(),
        vec![BadRange {
            addr: 0x30000,
            len: 256
        }]
    );
    assert!(m.scrub_all().is_empty());
    assert_eq!(m.badblocks(), vec![(0x20000 / 512, 1), (0x30000 / 512, 1)]);
    assert!(m.inject_poison(1 << 20, 1).is_err());
}

#[test]
fn poison_survives_into_the_recovery_machine() {
    let mut m = machine("optane-like");
    m.inject_poison(P, 1).unwrap();
    m.store(0, 0, 0x40000, &[1; 8]).unwrap();
    let point = m.crash_point();
    for img in point.images(CrashOptions::default()) {
        let mut rec = point.recover(&img, m.config()).unwrap();
        let mut buf = [0u8; 8];
        assert!(matches!(
            rec.load(0, 0, P, &mut buf),
            Err(MemError::MachineCheck(mc)) if mc.addr == P
        ));
    }
}
