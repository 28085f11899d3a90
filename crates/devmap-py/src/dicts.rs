//! Library values as the Python dicts the module returns: a poison notice, a namespace label.

use devmap::dax::PoisonNotice;
use devmap::namespace::Label;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// A notice as a dict.
pub(crate) fn notice_dict<'py>(py: Python<'py>, n: &PoisonNotice) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("mapping", n.mapping.get())?;
    d.set_item("pfn", n.pfn.raw())?;
    d.set_item("addr", n.addr)?;
    d.set_item("length", n.len())?;
    d.set_item("shift", n.shift)?;
    d.set_item("action_required", n.action_required)?;
    Ok(d)
}

/// A namespace's label as a dict.
pub(crate) fn label_dict<'py>(py: Python<'py>, l: &Label) -> PyResult<Bound<'py, PyDict>> {
    let ns = l.namespace;
    let d = PyDict::new(py);
    d.set_item("name", &l.name)?;
    d.set_item("uuid", uuid_text(&l.uuid))?;
    d.set_item("offset", l.offset)?;
    d.set_item("size", ns.size())?;
    d.set_item("align", ns.align())?;
    d.set_item("mode", ns.mode().name())?;
    d.set_item("map", ns.map().name())?;
    d.set_item("data_offset", ns.data_offset())?;
    d.set_item("data_bytes", ns.data_bytes())?;
    Ok(d)
}

/// A uuid in its canonical text form.
pub(crate) fn uuid_text(u: &[u8; 16]) -> String {
    let hex: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
