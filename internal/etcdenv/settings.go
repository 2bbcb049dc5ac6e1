package etcdenv

import (
	"fmt"
	"os"
	"strings"
)

// setting is the value of one variable and where it came from.
type setting struct {
	value string
	// name is the variable that held it: "ETCD_PASSWORD" or
	// "ETCD_PASSWORD_FILE".
	name string
	// src names the origin for error messages: "ETCD_PASSWORD" or
	// "ETCD_PASSWORD_FILE (/run/secrets/pw)".
	src string
}

func (s setting) set() bool { return s.value != "" }

// settings maps a variable name (without _FILE) to its setting. Unset
// variables are absent, which reads as the zero setting.
type settings map[string]setting

// isPEM reports whether name holds PEM text, which is read from a file
// verbatim; the values of other variables lose their trailing newlines.
func isPEM(name string) bool {
	return name == varServerCA || name == varClientCert || name == varClientKey
}

// readSettings reads every known variable through lookup, taking each from
// NAME or from the file named by NAME_FILE.
func readSettings(lookup Lookup) (settings, error) {
	s := settings{}
	for _, name := range []string{
		varEndpoints, varUsername, varPassword, varUsernameAndPassword,
		varInsecureSkipVerify, varServerCA, varClientCert, varClientKey,
		varAutoSyncInterval,
	} {
		v, err := read(lookup, name)
		if err != nil {
			return nil, err
		}
		if v.set() {
			s[name] = v
		}
	}
	return s, nil
}

// read returns the setting of name. Both NAME and NAME_FILE being set is an
// error, as is a NAME_FILE that cannot be read or is empty.
func read(lookup Lookup, name string) (setting, error) {
	fileVar := name + fileSuffix
	v, _ := lookup(name)
	path, _ := lookup(fileVar)
	switch {
	case v != "" && path != "":
		return setting{}, fmt.Errorf("both %s and %s are set; unset one of them", name, fileVar)
	case path == "":
		return setting{value: v, name: name, src: name}, nil
	}
	src := fmt.Sprintf("%s (%s)", fileVar, path)
	b, err := os.ReadFile(path)
	if err != nil {
		// err is an *os.PathError, which names the file and the reason.
		return setting{}, fmt.Errorf("read %s: %w; point %s at a readable file or unset it", fileVar, err, fileVar)
	}
	v = string(b)
	if !isPEM(name) {
		v = strings.TrimRight(v, "\r\n")
	}
	if v == "" {
		return setting{}, fmt.Errorf("%s is empty; put the value in the file or unset %s", src, fileVar)
	}
	return setting{value: v, name: fileVar, src: src}, nil
}
