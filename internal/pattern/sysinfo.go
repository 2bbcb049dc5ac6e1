package pattern

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
)

// SysInfo gathers the automatic var sysinfo (spec §5.4) from sources that
// need no extra tools: os.Hostname, /etc/hosts, /etc/os-release,
// /proc/meminfo, /proc/net/route, uname and net.Interfaces. Fields that
// cannot be read are "" or 0 (or empty); it never fails. Values are plain
// JSON types (string, float64, []any, map[string]any).
//
// mac is a map of interface name to MAC address. ipv4 and ipv6 list the
// addresses of every non-loopback interface in CIDR form, sorted.
func SysInfo() map[string]any {
	host, _ := os.Hostname()
	short, fqdn := hostNames(host, "/etc/hosts")
	osr := osRelease()
	kernelRelease, kernelVersion, machine := uname()
	info := map[string]any{
		"containerEngine":   firstInPath("docker", "podman"),
		"cpuLogical":        float64(runtime.NumCPU()),
		"defaultInterface":  defaultInterface("/proc/net/route"),
		"fqdn":              fqdn,
		"hostname":          short,
		"kernelRelease":     kernelRelease,
		"kernelVersion":     kernelVersion,
		"machine":           machine,
		"memoryTotal":       float64(memTotalMB("/proc/meminfo")),
		"osID":              osr["ID"],
		"osIDLike":          osr["ID_LIKE"],
		"osName":            osr["NAME"],
		"osType":            runtime.GOOS,
		"osVersion":         osr["VERSION"],
		"osVersionCodename": osr["VERSION_CODENAME"],
		"osVersionID":       osr["VERSION_ID"],
		"packageManager":    firstInPath("apt", "dnf", "yum", "apk", "pacman", "zypper"),
		"runtimeArch":       runtime.GOARCH,
	}
	for k, v := range interfaceInfo() {
		info[k] = v
	}
	return info
}

func firstInPath(names ...string) string {
	for _, n := range names {
		if _, err := exec.LookPath(n); err == nil {
			return n
		}
	}
	return ""
}

// hostNames returns the short hostname and the FQDN: the hostname itself
// when it has a dot, else the first dotted alias of it in the hosts file,
// else the hostname.
func hostNames(host, hostsFile string) (string, string) {
	short, _, _ := strings.Cut(host, ".")
	if strings.Contains(host, ".") {
		return short, host
	}
	f, err := os.Open(hostsFile)
	if err != nil {
		return short, host
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		names := fields[1:]
		for _, n := range names {
			if n != host {
				continue
			}
			for _, alias := range names {
				if strings.HasPrefix(alias, host+".") {
					return short, alias
				}
			}
		}
	}
	return short, host
}

// osRelease reads /etc/os-release, or /usr/lib/os-release.
func osRelease() map[string]string {
	for _, p := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		if data, err := os.ReadFile(p); err == nil {
			return parseOSRelease(string(data))
		}
	}
	return map[string]string{}
}

func parseOSRelease(s string) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		} else {
			v = strings.Trim(v, `'"`)
		}
		out[k] = v
	}
	return out
}

// memTotalMB reads MemTotal (kB) from a meminfo file, in MB.
func memTotalMB(p string) int {
	data, err := os.ReadFile(p)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, _ := strconv.Atoi(fields[1])
			return kb / 1024
		}
	}
	return 0
}

// defaultInterface returns the interface of the IPv4 default route in a
// /proc/net/route file.
func defaultInterface(p string) string {
	data, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(data), "\n")[1:] {
		fields := strings.Fields(line)
		if len(fields) >= 8 && fields[1] == "00000000" && fields[7] == "00000000" {
			return fields[0]
		}
	}
	return ""
}

// interfaceInfo returns the interfaces, ipv4, ipv6 and mac fields.
func interfaceInfo() map[string]any {
	ifaces := map[string]any{}
	macs := map[string]any{}
	var v4, v6 []string
	list, _ := net.Interfaces()
	for _, in := range list {
		var addrs []any
		as, _ := in.Addrs()
		for _, a := range as {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			addrs = append(addrs, ipn.String())
			if in.Flags&net.FlagLoopback != 0 {
				continue
			}
			if ipn.IP.To4() != nil {
				v4 = append(v4, ipn.String())
			} else {
				v6 = append(v6, ipn.String())
			}
		}
		mac := in.HardwareAddr.String()
		if mac != "" {
			macs[in.Name] = mac
		}
		ifaces[in.Name] = map[string]any{
			"addresses": orEmpty(addrs),
			"flags":     in.Flags.String(),
			"mac":       mac,
			"mtu":       float64(in.MTU),
		}
	}
	return map[string]any{"interfaces": ifaces, "ipv4": sortedAny(v4), "ipv6": sortedAny(v6), "mac": macs}
}

func orEmpty(s []any) []any {
	if s == nil {
		return []any{}
	}
	return s
}

func sortedAny(s []string) []any {
	sort.Strings(s)
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}
