// The names the test files use, declared once: the library's types, the
// helpers of files.hpp, the fault-injecting FaultFs, the protocol table and
// the power-loss simulator. A test file includes this instead of a block of
// using-declarations of its own; its local aliases (a Manager, a Writer)
// stay with it.
#pragma once

#include "atomic_state.hpp"
#include "support/fault_fs.hpp"
#include "support/files.hpp"
#include "support/protocol.hpp"
#include "support/sim_fs.hpp"

namespace as = atomic_state;

using as::AtomicDirectory;
using as::AtomicWriter;
using as::Batch;
using as::DataSync;
using as::Field;
using as::Fields;
using as::FullSync;
using as::Level;
using as::LogfmtSink;
using as::MissingDirectory;
using as::NoSync;
using as::NullSink;
using as::Result;
using as::SnapshotOptions;
using as::SnapshotReader;
using as::SnapshotWriter;
using as::Status;
using as::Step;
#ifndef ATOMIC_STATE_NO_JSON
using as::LoadOrigin;
using as::OnCorrupt;
using as::State;
using as::StateOptions;
#endif

using test::contains;
using test::Fault;
using test::FaultFs;
using test::kStamp;
using test::mode_of;
using test::Op;
using test::present;
using test::read_file;
using test::temp_files_in;
using test::TempDir;

namespace protocol = test::protocol;
using protocol::BatchCalls;
using protocol::Sync;

using sim::CrashPoint;
using sim::Image;
using sim::Node;
using sim::Order;
using sim::SimFs;
