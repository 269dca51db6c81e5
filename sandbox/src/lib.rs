//! The wall around every assistant tool call: identity binding, permission checks, budgets,
//! redaction, audit and OS-level isolation. Not built yet.
