//! The ublk control plane.
//!
//! This crate will hold a handle on `/dev/ublk-control` with its own SQE128 ring, and the control commands
//! the kernel accepts there: GET_FEATURES, ADD_DEV, SET_PARAMS/GET_PARAMS, GET_DEV_INFO(2),
//! GET_QUEUE_AFFINITY, START_DEV, STOP_DEV, DEL_DEV, and user recovery; each with a deadline, typed results
//! and errors that say what to do.
