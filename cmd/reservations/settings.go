package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// envPrefix starts the environment variable of every flag:
// RESERVATIONS_<FLAG_IN_UPPER_SNAKE>, e.g. --kafka-port -> RESERVATIONS_KAFKA_PORT.
const envPrefix = "RESERVATIONS_"

// envName is the environment variable equivalent of the flag name.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// setting describes one configuration knob: a flag and its environment variable.
type setting struct {
	Flag    string // without dashes
	Env     string
	Default string // as shown in help and in the config table
	// DefaultText marks Default as a description ("required", "random")
	// rather than a value.
	DefaultText bool
	Usage       string
}

// Where a setting's value came from.
const (
	fromDefault = iota
	fromEnv
	fromFlag
)

// settings is the configuration surface of one subcommand: one flag.FlagSet
// whose every flag is also read from its environment variable. A flag given on
// the command line wins over the environment; an empty environment variable
// counts as unset. All subcommands register their flags through this type, so
// the whole surface can be listed (help, `reservations config-table`).
type settings struct {
	fs     *flag.FlagSet
	list   []setting
	source map[string]int
	// invalid is the first value a Set rejected.
	invalid *usageError
}

func newSettings(cmd string) *settings {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // run prints help and errors itself
	fs.Usage = func() {}
	return &settings{fs: fs, source: make(map[string]int)}
}

// add registers v (whose current value is the default) under name. want
// describes a valid value for error messages ("" keeps v's own error).
func (s *settings) add(v flag.Value, name, want, usage string) {
	var cv flag.Value = &checked{Value: v, s: s, name: name, want: want}
	if b, ok := v.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		cv = checkedBool{cv.(*checked)}
	}
	s.fs.Var(cv, name, usage)
	s.list = append(s.list, setting{Flag: name, Env: envName(name), Default: v.String(), Usage: usage})
}

// builtin returns the flag package's own Value for a type, bound to p.
func builtin(register func(fs *flag.FlagSet)) flag.Value {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	register(fs)
	var v flag.Value
	fs.VisitAll(func(f *flag.Flag) { v = f.Value })
	return v
}

// String registers a string setting.
func (s *settings) String(p *string, name, def, usage string) {
	s.add(builtin(func(fs *flag.FlagSet) { fs.StringVar(p, "v", def, "") }), name, "", usage)
}

// Int registers an int setting.
func (s *settings) Int(p *int, name string, def int, usage string) {
	s.add(builtin(func(fs *flag.FlagSet) { fs.IntVar(p, "v", def, "") }), name, "want an integer", usage)
}

// Int64 registers an int64 setting.
func (s *settings) Int64(p *int64, name string, def int64, usage string) {
	s.add(builtin(func(fs *flag.FlagSet) { fs.Int64Var(p, "v", def, "") }), name, "want an integer", usage)
}

// Bool registers a boolean setting (`--name`, `--name=false`; env: true/false/1/0).
func (s *settings) Bool(p *bool, name string, def bool, usage string) {
	s.add(builtin(func(fs *flag.FlagSet) { fs.BoolVar(p, "v", def, "") }), name, "want true or false", usage)
}

// Duration registers a duration setting (Go syntax: 50ms, 10s, 24h).
func (s *settings) Duration(p *time.Duration, name string, def time.Duration, usage string) {
	s.add(builtin(func(fs *flag.FlagSet) { fs.DurationVar(p, "v", def, "") }), name,
		"want a duration such as 50ms, 10s, 5m or 24h", usage)
	s.list[len(s.list)-1].Default = shortDuration(def)
}

// shortDuration formats d without zero trailing units: 24h, 1h30m, 10s.
func shortDuration(d time.Duration) string {
	out := d.String()
	if strings.HasSuffix(out, "m0s") {
		out = strings.TrimSuffix(out, "0s")
	}
	if strings.HasSuffix(out, "h0m") {
		out = strings.TrimSuffix(out, "0m")
	}
	return out
}

// Var registers a setting of a custom type; its current value is the default
// and its Set errors say what a valid value is.
func (s *settings) Var(v flag.Value, name, usage string) {
	s.add(v, name, "", usage)
}

// checked wraps a setting's Value to keep the first invalid value, so that
// Parse reports it naming the setting both ways (flag and env var).
type checked struct {
	flag.Value
	s    *settings
	name string
	want string
}

func (c *checked) Set(v string) error {
	err := c.Value.Set(v)
	if err != nil && c.s.invalid == nil {
		if c.want != "" {
			err = errors.New(c.want)
		}
		c.s.invalid = &usageError{fmt.Sprintf("invalid value %q for %s: %v", v, c.s.Name(c.name), err)}
	}
	return err
}

type checkedBool struct{ *checked }

func (checkedBool) IsBoolFlag() bool { return true }

// ShowDefault replaces the default shown for name by a description, for
// computed or required settings.
func (s *settings) ShowDefault(name, text string) {
	for i := range s.list {
		if s.list[i].Flag == name {
			s.list[i].Default = text
			s.list[i].DefaultText = true
			return
		}
	}
	panic("settings: no setting " + name)
}

// Settings lists the registered settings in registration order.
func (s *settings) Settings() []setting { return s.list }

// Source reports where the value of name came from.
func (s *settings) Source(name string) int { return s.source[name] }

// Name names a setting in error messages: "--name (RESERVATIONS_NAME)", or
// the other way round when the value came from the environment.
func (s *settings) Name(name string) string {
	if s.source[name] == fromEnv {
		return fmt.Sprintf("%s (--%s)", envName(name), name)
	}
	return fmt.Sprintf("--%s (%s)", name, envName(name))
}

// Invalid returns the error for an invalid value of setting name.
func (s *settings) Invalid(name, format string, args ...any) error {
	return &usageError{fmt.Sprintf("invalid %s: %s", s.Name(name), fmt.Sprintf(format, args...))}
}

// usageError is a configuration error: the process exits 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// Parse reads args (flags and positional arguments may be interspersed; "--"
// ends the flags), then fills every setting not given as a flag from its
// environment variable. It returns the positional arguments. Errors are
// *usageError, or flag.ErrHelp for -h/--help.
func (s *settings) Parse(args []string, lookupEnv func(string) (string, bool)) ([]string, error) {
	var pos []string
	for {
		if err := s.fs.Parse(args); err != nil {
			if err == flag.ErrHelp {
				return nil, err
			}
			if s.invalid != nil {
				return nil, s.invalid
			}
			return nil, &usageError{err.Error()}
		}
		rest := s.fs.Args()
		if len(rest) == 0 {
			break
		}
		if i := len(args) - len(rest) - 1; i >= 0 && args[i] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	s.fs.Visit(func(f *flag.Flag) { s.source[f.Name] = fromFlag })
	for _, st := range s.list {
		if s.source[st.Flag] == fromFlag {
			continue
		}
		v, ok := lookupEnv(st.Env)
		if !ok || v == "" {
			continue
		}
		s.source[st.Flag] = fromEnv
		if err := s.fs.Set(st.Flag, v); err != nil {
			return nil, s.invalid
		}
	}
	return pos, nil
}

// WriteHelp writes the flag listing of the help text.
func (s *settings) WriteHelp(w io.Writer) {
	if len(s.list) == 0 {
		return
	}
	fmt.Fprintln(w, "Flags (each also read from its environment variable; a flag wins over the environment):")
	for _, st := range s.list {
		def := st.Default
		if def == "" {
			def = "none"
		}
		fmt.Fprintf(w, "  --%s  %s  (default: %s)\n      %s\n", st.Flag, st.Env, def, st.Usage)
	}
}

// WriteMarkdown writes the settings as a Markdown table: flag, env var,
// default, description.
func (s *settings) WriteMarkdown(w io.Writer) {
	fmt.Fprintln(w, "| flag | env var | default | description |")
	fmt.Fprintln(w, "|---|---|---|---|")
	cell := strings.NewReplacer("|", `\|`, "<", `\<`, ">", `\>`, "*", `\*`).Replace
	for _, st := range s.list {
		var def string
		switch {
		case st.Default == "":
			def = "none"
		case st.DefaultText:
			def = cell(st.Default)
		default:
			def = "`" + st.Default + "`"
		}
		fmt.Fprintf(w, "| `--%s` | `%s` | %s | %s |\n", st.Flag, st.Env, def, cell(st.Usage))
	}
}

// Custom setting types.

// logLevel is a slog level setting: debug, info, warn, error.
type logLevel struct{ l *slog.Level }

func (v logLevel) String() string {
	if v.l == nil {
		return ""
	}
	return strings.ToLower(v.l.String())
}

func (v logLevel) Set(s string) error {
	if err := v.l.UnmarshalText([]byte(s)); err != nil {
		return fmt.Errorf("want debug, info, warn or error")
	}
	return nil
}

// list is a comma-separated list setting (empty items dropped).
type list struct{ p *[]string }

func (v list) String() string {
	if v.p == nil {
		return ""
	}
	return strings.Join(*v.p, ",")
}

func (v list) Set(s string) error {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	*v.p = out
	return nil
}

// optInt64 is an optional integer: unset stays distinct from 0.
type optInt64 struct{ p **int64 }

func (v optInt64) String() string {
	if v.p == nil || *v.p == nil {
		return ""
	}
	return strconv.FormatInt(**v.p, 10)
}

func (v optInt64) Set(s string) error {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return fmt.Errorf("want an integer")
	}
	*v.p = &n
	return nil
}

// int32List is a comma-separated list of non-negative integers, e.g.
// partitions "0,3" (empty: none).
type int32List struct{ p *[]int32 }

func (v int32List) String() string {
	if v.p == nil {
		return ""
	}
	out := make([]string, len(*v.p))
	for i, n := range *v.p {
		out[i] = strconv.Itoa(int(n))
	}
	return strings.Join(out, ",")
}

func (v int32List) Set(s string) error {
	var out []int32
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		n, err := strconv.ParseInt(item, 10, 32)
		if err != nil || n < 0 {
			return fmt.Errorf("want comma-separated non-negative integers such as 0,3")
		}
		out = append(out, int32(n))
	}
	*v.p = out
	return nil
}
