//! The VIP tables of the configuration file: `[[vip]]` (one table per service) or the old single
//! `[vip]` (the service `default`), the `--vip-address`/`--vip-interface` flags over the service
//! `default`, and the rules across tables: no two with one service name, no two with one address.

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::{Deserialize, Deserializer, Serialize};
use vip::{VipConfig, DEFAULT_SERVICE};

use super::{CommandLine, ConfigError};

/// The file's `vip` key: one table (`[vip]`) or an array of tables (`[[vip]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum VipSection {
    /// `[vip]`: one VIP, service `default` unless it names one.
    One(VipConfig),
    /// `[[vip]]`: one table per service.
    Many(Vec<VipConfig>),
}

impl VipSection {
    /// The tables in file order.
    pub fn into_vec(self) -> Vec<VipConfig> {
        match self {
            VipSection::One(vip) => vec![vip],
            VipSection::Many(vips) => vips,
        }
    }
}

impl<'de> Deserialize<'de> for VipSection {
    /// A table or an array of tables, each read as a `VipConfig` so that its errors (an unknown
    /// key, a wrong type) are that struct's own, not an untagged enum's "matched no variant".
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<VipSection, D::Error> {
        struct SectionVisitor;
        impl<'de> serde::de::Visitor<'de> for SectionVisitor {
            type Value = VipSection;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a [vip] table or [[vip]] tables")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<VipSection, A::Error> {
                VipConfig::deserialize(MapAccessDeserializer::new(map)).map(VipSection::One)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<VipSection, A::Error> {
                Vec::<VipConfig>::deserialize(SeqAccessDeserializer::new(seq)).map(VipSection::Many)
            }
        }
        deserializer.deserialize_any(SectionVisitor)
    }
}

/// The VIPs the daemon holds as leader: the file's tables, with the flags applied to the service
/// `default` (which they create when the file has none). Each is validated later with the rest.
pub fn merge_vips(file: Option<VipSection>, cli: &CommandLine) -> Result<Vec<VipConfig>, ConfigError> {
    let mut vips = file.map(VipSection::into_vec).unwrap_or_default();
    match vips.iter_mut().find(|vip| vip.service == DEFAULT_SERVICE) {
        Some(vip) => {
            if let Some(address) = &cli.vip_address {
                vip.address = address.clone();
            }
            if let Some(interface) = &cli.vip_interface {
                vip.interface = interface.clone();
            }
        }
        None => match (&cli.vip_address, &cli.vip_interface) {
            (Some(address), Some(interface)) => vips.push(VipConfig::new(address.as_str(), interface.as_str())),
            (Some(_), None) => {
                return Err(ConfigError::invalid("vip.interface", "--vip-address needs --vip-interface"))
            }
            (None, Some(_)) => return Err(ConfigError::invalid("vip.address", "--vip-interface needs --vip-address")),
            (None, None) => {}
        },
    }
    Ok(vips)
}

/// Checks every table (its keys named in full, with the service: `vip[iscsi].address`) and the
/// rules across them: one table per service, one service per address.
pub fn check_vips(vips: &[VipConfig]) -> Result<(), ConfigError> {
    for vip in vips {
        vip.validate().map_err(|error| ConfigError::Invalid {
            key: "vip",
            message: format!("[[vip]] service {:?}: {error}", vip.service),
        })?;
    }
    for (index, vip) in vips.iter().enumerate() {
        for earlier in &vips[..index] {
            if earlier.service == vip.service {
                return Err(ConfigError::invalid(
                    "vip.service",
                    format!("two [[vip]] tables are for the service {:?}; give each its own service name", vip.service),
                ));
            }
            // Validated above: both parse.
            let same_address = match (earlier.vip(), vip.vip()) {
                (Ok(a), Ok(b)) => a.ip == b.ip,
                _ => false,
            };
            if same_address {
                return Err(ConfigError::invalid(
                    "vip.address",
                    format!(
                        "the services {:?} and {:?} have the same VIP address {}; each service needs its own",
                        earlier.service, vip.service, vip.address
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
