//! The ADD result (CNI result format of 0.3.x, 0.4.0 and 1.0.0) and the error a plugin
//! prints on failure.

use std::net::IpAddr;

use serde::Deserialize;
use serde_json::Value;

/// The final ADD result of a network, typed. The raw JSON is kept as well: it is the
/// `prevResult` of the DEL and is cached verbatim (no field lost by a re-serialization).
#[derive(Debug, Clone, PartialEq)]
pub struct CniResult {
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
    raw: Value,
}

/// An interface the plugins created or configured (`sandbox` is the netns path for the
/// pod's interfaces, absent for the host side).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct Interface {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub mac: String,
    #[serde(default)]
    pub sandbox: String,
}

/// One address: `"address": "10.88.0.5/16"`, optional `gateway`, optional `interface`
/// (an index into `interfaces`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    pub address: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    pub interface: Option<usize>,
}

/// A route: `dst` a CIDR, `gw` optional.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default)]
    pub gw: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct Dns {
    #[serde(default)]
    pub nameservers: Vec<String>,
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub search: Vec<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawResult {
    #[serde(default)]
    cni_version: String,
    #[serde(default)]
    interfaces: Vec<Interface>,
    #[serde(default)]
    ips: Vec<RawIp>,
    #[serde(default)]
    routes: Vec<Route>,
    #[serde(default)]
    dns: Dns,
}

#[derive(Deserialize)]
struct RawIp {
    address: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    interface: Option<usize>,
}

impl CniResult {
    /// Parses a result printed by a plugin. The error is a sentence naming the bad field.
    pub fn parse(raw: Value) -> Result<CniResult, String> {
        let parsed: RawResult = serde_json::from_value(raw.clone()).map_err(|e| e.to_string())?;
        let ips = parsed
            .ips
            .iter()
            .map(|ip| {
                let (address, prefix_len) = parse_cidr(&ip.address)
                    .ok_or_else(|| format!("ips: address {:?} is not a CIDR", ip.address))?;
                let gateway = match ip.gateway.as_deref() {
                    None | Some("") => None,
                    Some(g) => Some(
                        g.parse::<IpAddr>()
                            .map_err(|_| format!("ips: gateway {g:?} is not an IP address"))?,
                    ),
                };
                Ok(IpConfig {
                    address,
                    prefix_len,
                    gateway,
                    interface: ip.interface,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(CniResult {
            cni_version: parsed.cni_version,
            interfaces: parsed.interfaces,
            ips,
            routes: parsed.routes,
            dns: parsed.dns,
            raw,
        })
    }

    /// The pod's IPs, IPv4 first then IPv6, each in result order (the CRI's PodIP is the
    /// first, AdditionalIPs the rest).
    pub fn pod_ips(&self) -> Vec<IpAddr> {
        let v4 = self.ips.iter().filter(|ip| ip.address.is_ipv4());
        let v6 = self.ips.iter().filter(|ip| ip.address.is_ipv6());
        v4.chain(v6).map(|ip| ip.address).collect()
    }

    /// The result as the plugin printed it.
    pub fn raw(&self) -> &Value {
        &self.raw
    }
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = s.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}

/// The error a failing plugin prints on stdout: `{"cniVersion", "code", "msg", "details"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PluginErrorJson {
    #[serde(default)]
    pub code: Option<u64>,
    #[serde(default)]
    pub msg: String,
    #[serde(default)]
    pub details: String,
}

impl PluginErrorJson {
    /// Parses the error object; `None` when stdout is not one (the caller falls back to
    /// stderr).
    pub fn parse(stdout: &[u8]) -> Option<PluginErrorJson> {
        let e: PluginErrorJson = serde_json::from_slice(stdout).ok()?;
        (!e.msg.is_empty() || e.code.is_some()).then_some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_a_1_0_0_result() {
        let raw = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "veth1", "mac": "aa:bb:cc:dd:ee:02"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/run/netns/p"}
            ],
            "ips": [
                {"address": "fd00::5/64", "gateway": "fd00::1", "interface": 2},
                {"address": "10.88.0.5/16", "gateway": "10.88.0.1", "interface": 2}
            ],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.88.0.1"}, {"dst": "::/0"}],
            "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}
        });
        let r = CniResult::parse(raw.clone()).unwrap();
        assert_eq!(r.cni_version, "1.0.0");
        assert_eq!(r.interfaces[2].sandbox, "/run/netns/p");
        assert_eq!(r.ips[1].prefix_len, 16);
        assert_eq!(r.ips[1].gateway, Some("10.88.0.1".parse().unwrap()));
        assert_eq!(r.ips[1].interface, Some(2));
        assert_eq!(
            r.pod_ips(),
            vec![
                "10.88.0.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
        assert_eq!(r.routes[1].gw, None);
        assert_eq!(r.dns.nameservers, vec!["10.96.0.10"]);
        assert_eq!(r.raw(), &raw);
    }

    #[test]
    fn parses_a_0_4_0_result_with_version_fields() {
        let raw = json!({
            "cniVersion": "0.4.0",
            "interfaces": [{"name": "eth0", "sandbox": "/proc/1/ns/net"}],
            "ips": [{"version": "4", "address": "10.99.0.2/24", "gateway": "10.99.0.1", "interface": 0}],
            "dns": {}
        });
        let r = CniResult::parse(raw).unwrap();
        assert_eq!(r.pod_ips(), vec!["10.99.0.2".parse::<IpAddr>().unwrap()]);
        assert!(r.routes.is_empty());
    }

    #[test]
    fn bad_addresses_are_named() {
        let err = CniResult::parse(json!({"ips": [{"address": "10.0.0.300/8"}]})).unwrap_err();
        assert!(err.contains("10.0.0.300/8"), "{err}");
        let err = CniResult::parse(json!({"ips": [{"address": "10.0.0.3/33"}]})).unwrap_err();
        assert!(err.contains("10.0.0.3/33"), "{err}");
        let err = CniResult::parse(json!({"ips": [{"address": "10.0.0.3/8", "gateway": "x"}]}))
            .unwrap_err();
        assert!(err.contains("gateway \"x\""), "{err}");
    }

    #[test]
    fn parses_plugin_errors() {
        let e = PluginErrorJson::parse(
            br#"{"cniVersion":"1.0.0","code":11,"msg":"failed to allocate","details":"no IPs left"}"#,
        )
        .unwrap();
        assert_eq!(e.code, Some(11));
        assert_eq!(e.msg, "failed to allocate");
        assert_eq!(e.details, "no IPs left");
        assert_eq!(PluginErrorJson::parse(b"panic: runtime error"), None);
        assert_eq!(PluginErrorJson::parse(b"{}"), None);
    }
}
