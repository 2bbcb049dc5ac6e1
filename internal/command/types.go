package command

// Exec is one layer of the exec configuration (spec §2.9). Pointer and zero
// fields mean "not set in this layer", so layers can be merged.
type Exec struct {
	AllowOverride       *bool             `json:"allowOverride,omitempty"`
	Command             string            `json:"command,omitempty"`
	ContainerEntrypoint string            `json:"containerEntrypoint,omitempty"`
	ContainerImage      string            `json:"containerImage,omitempty"`
	ContainerNetwork    string            `json:"containerNetwork,omitempty"`
	ContainerPrivileged bool              `json:"containerPrivileged,omitempty"`
	ContainerPull       string            `json:"containerPull,omitempty"`
	ContainerUser       string            `json:"containerUser,omitempty"`
	ContainerVolumes    []string          `json:"containerVolumes,omitempty"`
	ContainerWorkDir    string            `json:"containerWorkDir,omitempty"`
	Env                 map[string]string `json:"env,omitempty"`
	EnvInherit          bool              `json:"envInherit,omitempty"`
	Group               string            `json:"group,omitempty"`
	Sudo                bool              `json:"sudo,omitempty"`
	User                string            `json:"user,omitempty"`
	WorkDir             string            `json:"workDir,omitempty"`
}

// Command is one entry of a pattern's build or run list (spec §2.2).
// A Command with a non-nil Commands is a group: a new scope whose other
// fields, except ID, OnChange, OnFail and OnRemove, are ignored (spec §9 #26).
type Command struct {
	ID           string   `json:"id"`
	Always       bool     `json:"always,omitempty"`
	Check        string   `json:"check,omitempty"`
	Change       string   `json:"change,omitempty"`
	ChangeIgnore bool     `json:"changeIgnore,omitempty"`
	Remove       string   `json:"remove,omitempty"`
	RemoveAfter  bool     `json:"removeAfter,omitempty"`
	Commands     Commands `json:"commands,omitempty"`
	EnvPrefix    string   `json:"envPrefix,omitempty"`
	Exec         *Exec    `json:"exec,omitempty"`
	OnChange     []string `json:"onChange,omitempty"`
	OnFail       []string `json:"onFail,omitempty"`
	OnRemove     []string `json:"onRemove,omitempty"`
	Stdin        string   `json:"stdin,omitempty"`
}

// IsGroup reports whether c is a group (has a commands list, even an empty
// one).
func (c *Command) IsGroup() bool { return c.Commands != nil }

// Commands is a flattened Command list: nested plain arrays and null
// elements in the JSON input are flattened/skipped on decode (spec §2.3).
type Commands []*Command
