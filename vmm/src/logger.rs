//! The vmm's log lines: `vmm[PID]: LEVEL message` on stderr (init keeps the monitor's
//! stderr in the instance's monitor.log). `VMM_LOG=debug` raises the level. The
//! backend is [`host::log`]'s, shared by every skerry program.

/// Installs the logger (once; later calls do nothing).
pub fn init() {
    host::log::Logger::new("vmm")
        .with_pid(true)
        .level_from_env("VMM_LOG")
        .install();
}
