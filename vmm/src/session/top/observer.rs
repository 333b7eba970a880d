//! What `top` tells whoever watches it. Events flow one way: the loop calls
//! the observer; the table printer in `output` (with the NDJSON file and the
//! picture) is one.

use crate::session::top::setup::Columns;
use tickburst_analysis::top::TopRow;

/// Things a caller watches while `top` goes on. The methods that write
/// files may fail: `top` then stops with [`TopError::Output`].
///
/// [`TopError::Output`]: crate::session::top::config::TopError::Output
pub trait TopObserver {
    /// Why the observer's output could not be written.
    type Error: std::error::Error + Send + Sync + 'static;
    /// The host can measure `columns`; called once, before anything else.
    fn start(&mut self, columns: Columns) -> Result<(), Self::Error>;
    /// A note (a VM seen or gone, a reason, progress), without the `#`.
    fn note(&mut self, text: &str);
    /// VM `pid` (`name`, with `vcpus` vCPUs) is watched from now on (its
    /// note has been given too). Default: nothing more.
    fn vm_seen(&mut self, _pid: u32, _name: &str, _vcpus: usize) {}
    /// VM `pid` (`name`) is gone (its note has been given too). Default:
    /// nothing more.
    fn vm_gone(&mut self, _pid: u32, _name: &str) {}
    /// The notes of the start are done: the table begins.
    fn table(&mut self);
    /// The rows of one interval, sorted by pid, then vCPU.
    fn rows(&mut self, rows: &[TopRow]) -> Result<(), Self::Error>;
    /// `top` ended normally (`--duration`, Ctrl-C, every `--pid` gone).
    fn finish(&mut self) -> Result<(), Self::Error>;
}
