package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
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

// fileSuffix makes the name of the variable that holds a secret setting's
// value in a file: RESERVATIONS_PG_DSN_FILE for RESERVATIONS_PG_DSN.
const fileSuffix = "_FILE"

// setting describes one configuration knob: a flag and its environment variable.
type setting struct {
	Flag string // without dashes
	Env  string // the setting's own variable: envName(Flag), or a subcommand-prefixed name (see settings.Env)
	// Fallback are older or shared variables read, in order, only when Env
	// (and its _FILE variable) is unset or empty. A variable whose meaning
	// differs between subcommands (the sink's admin address is not the
	// processor's) gets a prefixed Env and keeps the shared name as a
	// fallback, so one environment can configure every subcommand.
	Fallback []string
	// FallbackNote says, in the config table, what the fallback variables
	// mean elsewhere.
	FallbackNote string
	// Secret settings (passwords, tokens, DSNs) can also be read from a file
	// named by Env+"_FILE" (and each fallback's _FILE variable); their value
	// never appears in messages.
	Secret  bool
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
	// envFrom is the variable a value from the environment was read from
	// (the setting's own, a fallback, or a _FILE variable), for messages.
	envFrom map[string]string
	// invalid is the first value a Set rejected.
	invalid *usageError
}

func newSettings(cmd string) *settings {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // run prints help and errors itself
	fs.Usage = func() {}
	return &settings{fs: fs, source: make(map[string]int), envFrom: make(map[string]string)}
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
		if st := c.s.lookup(c.name); st != nil && st.Secret {
			c.s.invalid = &usageError{fmt.Sprintf("invalid value for %s: %v", c.s.Name(c.name), err)}
		} else {
			c.s.invalid = &usageError{fmt.Sprintf("invalid value %q for %s: %v", v, c.s.Name(c.name), err)}
		}
	}
	return err
}

type checkedBool struct{ *checked }

func (checkedBool) IsBoolFlag() bool { return true }

// lookup returns the registered setting name, or nil.
func (s *settings) lookup(name string) *setting {
	for i := range s.list {
		if s.list[i].Flag == name {
			return &s.list[i]
		}
	}
	return nil
}

// mustLookup returns the registered setting name; a missing one is a
// programming error.
func (s *settings) mustLookup(name string) *setting {
	st := s.lookup(name)
	if st == nil {
		panic("settings: no setting " + name)
	}
	return st
}

// ShowDefault replaces the default shown for name by a description, for
// computed or required settings.
func (s *settings) ShowDefault(name, text string) {
	st := s.mustLookup(name)
	st.Default = text
	st.DefaultText = true
}

// Env gives setting name its own variable env instead of envName(name), and
// keeps fallback variables (read in order when env is unset or empty; a flag
// still wins over all of them); note says what the fallbacks mean elsewhere.
// It is for settings whose meaning differs between subcommands: the sink's
// admin address is RESERVATIONS_SINK_HTTP_ADDR, with RESERVATIONS_HTTP_ADDR
// (the processor's) as a fallback for environments that hold only the sink's
// settings.
func (s *settings) Env(name, env, note string, fallback ...string) {
	st := s.mustLookup(name)
	st.Env = env
	st.Fallback = fallback
	st.FallbackNote = note
}

// Secret marks setting name as a secret: its value may come from the file
// named by <VAR>_FILE (trailing newline trimmed; <VAR> and <VAR>_FILE both
// set is an error), and it is never printed in messages.
func (s *settings) Secret(name string) {
	s.mustLookup(name).Secret = true
}

// Settings lists the registered settings in registration order.
func (s *settings) Settings() []setting { return s.list }

// Source reports where the value of name came from.
func (s *settings) Source(name string) int { return s.source[name] }

// EnvFrom returns the environment variable the value of name was read from
// ("" unless Source(name) is fromEnv).
func (s *settings) EnvFrom(name string) string { return s.envFrom[name] }

// Name names a setting in error messages: "--name (RESERVATIONS_NAME)", or
// the other way round, naming the variable read, when the value came from the
// environment.
func (s *settings) Name(name string) string {
	if s.source[name] == fromEnv && s.envFrom[name] != "" {
		return fmt.Sprintf("%s (--%s)", s.envFrom[name], name)
	}
	env := envName(name)
	if st := s.lookup(name); st != nil {
		env = st.Env
	}
	return fmt.Sprintf("--%s (%s)", name, env)
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
		v, from, err := s.fromEnv(st, lookupEnv)
		if err != nil {
			return nil, err
		}
		if from == "" {
			continue
		}
		s.source[st.Flag] = fromEnv
		s.envFrom[st.Flag] = from
		if err := s.fs.Set(st.Flag, v); err != nil {
			return nil, s.invalid
		}
	}
	return pos, nil
}

// envVars lists the variables st is read from, in precedence order: its own,
// its _FILE variable (secrets), then each fallback and its _FILE variable.
func (st setting) envVars() []string {
	var out []string
	for _, env := range append([]string{st.Env}, st.Fallback...) {
		out = append(out, env)
		if st.Secret {
			out = append(out, env+fileSuffix)
		}
	}
	return out
}

// fromEnv returns the value of st from the environment and the variable it
// came from ("" when none is set). The first of st.Env and the fallbacks that
// is set (non-empty), directly or through its _FILE variable, wins; a
// variable and its _FILE variable both set is an error, as is a _FILE
// variable naming a file that cannot be read or is empty.
func (*settings) fromEnv(st setting, lookupEnv func(string) (string, bool)) (value, from string, err error) {
	get := func(k string) string { v, _ := lookupEnv(k); return v }
	for _, env := range append([]string{st.Env}, st.Fallback...) {
		v := get(env)
		var file string
		if st.Secret {
			file = get(env + fileSuffix)
		}
		switch {
		case v != "" && file != "":
			return "", "", &usageError{fmt.Sprintf("%s and %s are both set (--%s): set only one of them",
				env, env+fileSuffix, st.Flag)}
		case file != "":
			b, err := os.ReadFile(file)
			if err != nil {
				return "", "", &usageError{fmt.Sprintf("invalid %s (--%s): %v", env+fileSuffix, st.Flag, err)}
			}
			value := strings.TrimRight(string(b), "\r\n")
			if value == "" {
				return "", "", &usageError{fmt.Sprintf("invalid %s (--%s): %s is empty", env+fileSuffix, st.Flag, file)}
			}
			return value, env + fileSuffix, nil
		case v != "":
			return v, env, nil
		}
	}
	return "", "", nil
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
		fmt.Fprintf(w, "  --%s  %s  (default: %s)\n      %s\n", st.Flag, st.envHelp(), def, st.Usage)
	}
}

// envHelp names the variables of st for the help text, in precedence order:
// "RESERVATIONS_SINK_HTTP_ADDR, else RESERVATIONS_HTTP_ADDR",
// "RESERVATIONS_PG_DSN (or RESERVATIONS_PG_DSN_FILE)".
func (st setting) envHelp() string {
	var out []string
	for _, env := range append([]string{st.Env}, st.Fallback...) {
		if st.Secret {
			env += " (or " + env + fileSuffix + ")"
		}
		out = append(out, env)
	}
	return strings.Join(out, ", else ")
}

// fallbackUsage describes a fallback variable in the config table.
func fallbackUsage(st setting) string {
	out := fmt.Sprintf("read only when %s is unset or empty", st.Env)
	if st.FallbackNote != "" {
		out += ": " + st.FallbackNote
	}
	return out
}

// fileUsage describes the _FILE variable of a secret setting in the config table.
func fileUsage(env string) string {
	return fmt.Sprintf("a file holding the value of %s (a mounted secret; trailing newline trimmed); setting both is an error", env)
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
		// One more row per other variable that sets the flag, so that each
		// row names one variable (tools parse the table).
		for _, env := range st.envVars()[1:] {
			def, usage := "none", fileUsage(strings.TrimSuffix(env, fileSuffix))
			if !strings.HasSuffix(env, fileSuffix) {
				def, usage = "(fallback)", fallbackUsage(st)
			}
			fmt.Fprintf(w, "| `--%s` | `%s` | %s | %s |\n", st.Flag, env, def, cell(usage))
		}
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
