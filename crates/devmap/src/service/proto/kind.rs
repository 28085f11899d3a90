//! Request kinds (0x01xx) and reply kinds (0x02xx).

/// [`super::List`].
pub const LIST: u16 = 0x0101;
/// [`super::Open`].
pub const OPEN: u16 = 0x0102;
/// [`super::Map`].
pub const MAP: u16 = 0x0103;
/// [`super::Unmap`].
pub const UNMAP: u16 = 0x0104;
/// [`super::Status`].
pub const STATUS: u16 = 0x0105;
/// [`super::Enable`].
pub const ENABLE: u16 = 0x0106;
/// [`super::Disable`].
pub const DISABLE: u16 = 0x0107;
/// [`super::Pin`].
pub const PIN: u16 = 0x0108;
/// [`super::Unpin`].
pub const UNPIN: u16 = 0x0109;
/// [`super::InjectError`].
pub const INJECT_ERROR: u16 = 0x010A;
/// [`super::CreateNamespace`].
pub const CREATE_NAMESPACE: u16 = 0x010B;
/// [`super::DestroyNamespace`].
pub const DESTROY_NAMESPACE: u16 = 0x010C;
/// [`super::CheckNamespace`].
pub const CHECK_NAMESPACE: u16 = 0x010D;
/// [`super::ClearErrors`].
pub const CLEAR_ERRORS: u16 = 0x010E;
/// [`super::ReportError`].
pub const REPORT_ERROR: u16 = 0x010F;
/// [`super::Done`].
pub const DONE: u16 = 0x0200;
/// [`super::ErrorReply`].
pub const ERROR: u16 = 0x0201;
/// [`super::Namespaces`].
pub const NAMESPACES: u16 = 0x0202;
/// [`super::Opened`].
pub const OPENED: u16 = 0x0203;
/// [`super::Mapped`].
pub const MAPPED: u16 = 0x0204;
/// [`super::StatusReply`].
pub const STATUS_REPLY: u16 = 0x0205;
/// [`super::Enabled`].
pub const ENABLED: u16 = 0x0206;
/// [`super::PinReply`].
pub const PINNED: u16 = 0x0207;
/// [`super::Injected`].
pub const INJECTED: u16 = 0x0208;
/// [`super::Created`].
pub const CREATED: u16 = 0x0209;
/// [`super::Checked`].
pub const CHECKED: u16 = 0x020A;
/// [`super::Cleared`].
pub const CLEARED: u16 = 0x020B;
/// [`super::Notice`], sent unasked (request id 0).
pub const NOTICE: u16 = 0x0300;
