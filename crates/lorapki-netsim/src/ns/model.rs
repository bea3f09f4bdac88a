//! When the network server answers ([`AnswerModel`]) and what goes wrong between the network
//! server and the application ([`Faults`]; loss on the air is the simulator's).

/// When the network server sends the application's answer (PROTOCOL.md §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AnswerModel {
    /// In the RX window of the uplink that carried the request.
    SameWindow,
    /// Only in the RX window of the next uplink (an application integration answers too late
    /// for the current window).
    NextUplink,
}

impl AnswerModel {
    /// Both models.
    pub const ALL: [AnswerModel; 2] = [AnswerModel::SameWindow, AnswerModel::NextUplink];

    /// "same-window" / "next-uplink".
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            AnswerModel::SameWindow => "same-window",
            AnswerModel::NextUplink => "next-uplink",
        }
    }
}

/// Fault probabilities of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkFaults {
    /// A frame is lost on the air (not received).
    pub loss: f64,
    /// A payload is delivered twice between the network server and the application.
    pub duplication: f64,
    /// A payload is held back and delivered after the next one (reordering).
    pub reordering: f64,
}

/// Fault probabilities, per direction.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// Device → network.
    pub uplink: LinkFaults,
    /// Network → device.
    pub downlink: LinkFaults,
}

impl Faults {
    /// No faults.
    #[must_use]
    pub fn none() -> Self {
        Self::default()
    }

    /// The same faults both ways.
    #[must_use]
    pub fn symmetric(loss: f64, duplication: f64, reordering: f64) -> Self {
        let link = LinkFaults {
            loss,
            duplication,
            reordering,
        };
        Self {
            uplink: link,
            downlink: link,
        }
    }
}
