//! The test bench: the real MAC on netsim's air ([`lorapki_testnet::mac_device`], re-exported
//! here) and [`World`], netsim's gateway, network server, join server and lorapki server with
//! one such device.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub use lorapki_testnet::mac_device::*;

use lorapki_crypto::AesKey;
use lorapki_lorawan::Event;
use lorapki_lorawan::PersistentState;
use lorapki_netsim::ns::{AnswerModel, Faults, NetworkServer, NsConfig, PkiServer};
use lorapki_netsim::region::Region;
use lorapki_netsim::sim::{SimConfig, Simulation};
use lorapki_proto::{DeviceRecord, LorawanVersion, ServerConfig, ServerEndpoint};

// ----- a world -----

/// netsim's air, network server, join server and lorapki server, with one [`OnAir`] device.
pub struct World {
    pub sim: Simulation<PkiServer, OnAir>,
}

impl World {
    pub fn new(region: Region, dr: u8, model: AnswerModel, seed: u64) -> Self {
        Self::with_faults(region, dr, model, seed, Faults::none())
    }

    /// A world whose air loses frames and whose integration duplicates and reorders them.
    pub fn with_faults(
        region: Region,
        dr: u8,
        model: AnswerModel,
        seed: u64,
        faults: Faults,
    ) -> Self {
        let (mut server_backend, server_public) = server_key();
        let endpoint = ServerEndpoint::new(
            &mut server_backend,
            ServerConfig::new(SERVER_SLOT, server_public),
        );
        let mut pki = PkiServer::new(endpoint, server_backend);
        let (device, persist, identity) = device(
            region,
            dr,
            seed,
            server_public,
            factory_store(),
            PersistentState::default(),
            |_| {},
        );
        pki.register(DeviceRecord {
            dev_eui: DEV_EUI,
            join_eui: JOIN_EUI,
            lorawan: LorawanVersion::V1_0,
            identity,
        });
        let mut ns_config = NsConfig::new(model);
        ns_config.seed = seed;
        ns_config.faults = faults;
        let mut ns = NetworkServer::new(region, ns_config, pki, 1);
        ns.join_server
            .provision(DEV_EUI, JOIN_EUI, AesKey::from_array(FACTORY_KEY));
        let mut sim_config = SimConfig::new(seed);
        sim_config.faults = faults;
        let mut sim = Simulation::new(sim_config, ns);
        sim.add_device(OnAir::new(device, persist, region));
        Self { sim }
    }

    pub fn device(&self) -> &OnAir {
        &self.sim.devices()[0]
    }

    /// Runs until the device reports `event`, or the simulation ends.
    pub fn run_until(&mut self, event: &Event) -> bool {
        self.sim.run_until(|sim| sim.devices()[0].saw(event));
        self.device().saw(event)
    }
}
