//! The `ChatServer` actor: who is online, which rooms exist, and who is in them.
//!
//! It is the single owner of that state, so every change (a login, a join, a disconnect) is
//! applied in one order that every client observes. It never waits on anyone: replies and
//! notices are queued on the connections' [`Outbox`]es, which never block. Replies to a request
//! are written by the server itself, not returned to the session, so they are ordered correctly
//! with the notices it sends (a new user sees `ok|login` before anyone's `logout`).
//!
//! Direct messages do not pass through here after the first one: a session asks once for the
//! recipient's outbox ([`Resolve`]) and then writes to it itself, so the server's mailbox is not
//! on the hot path.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::SocketAddr,
    sync::Arc,
};

use actix::{fut::wrap_future, prelude::*};
use log::{info, warn};
use tokio::time::Instant;

use super::session::CloseCause;
use crate::{
    accounts::{LoginKind, REFRESH_EVERY, STORE_WAIT},
    codec::{fold_name, ErrorKind, Event, EventVerb},
    config::{AuthMode, Presence, Settings},
    metrics::{Delivered, Metrics},
    outbox::Outbox,
    store::{NewMessage, Queueing, StoreHandle},
};

/// Identifies one connection for the lifetime of the process.
pub(crate) type ConnId = u64;

/// Names are unique and looked up ignoring ASCII case; this is the folded form.
type Key = Arc<str>;

fn fold(name: &str) -> Key {
    fold_name(name).into()
}

/// Logs in the connection `conn` as `name` (already checked to be a valid name). The reply
/// (`ok|login|…` and the peer list, or `error|name-taken|…`, or `error|password-required|…`
/// for a guest asking for a registered name) is written to `outbox`; the result is the name as
/// logged in.
#[derive(Message)]
#[rtype(result = "Option<Arc<str>>")]
pub(crate) struct Login {
    pub(crate) conn: ConnId,
    pub(crate) peer: SocketAddr,
    pub(crate) name: String,
    pub(crate) outbox: Outbox,
    /// How the session proved its right to the name.
    pub(crate) kind: Identity,
}

/// A guest, or the owner of an account, whose password the session has checked.
pub(crate) enum Identity {
    Guest,
    /// Logged in to the account of that name: told if the operator removes it.
    Account(Recipient<AccountRemoved>),
}

/// The account a session is logged in to no longer exists: it must log out.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct AccountRemoved;

/// `register|NAME|…`: holds `name` for a registration under way, if it is neither registered
/// nor online; `Err(NameTaken)` otherwise. Every `Reserve` that succeeds is followed by one
/// [`Registered`].
#[derive(Message)]
#[rtype(result = "Result<(), ErrorKind>")]
pub(crate) struct Reserve {
    pub(crate) name: String,
    /// A guest registering the name it is using: online under it, and that is no obstacle.
    pub(crate) guest: Option<ConnId>,
}

/// The guest `conn` has registered the name it uses: it is logged in to that account now
/// (`ok|login|NAME` again, with no peer list and no notice to anyone).
#[derive(Message)]
#[rtype(result = "Option<Arc<str>>")]
pub(crate) struct Upgrade {
    pub(crate) conn: ConnId,
    pub(crate) session: Recipient<AccountRemoved>,
}

/// How a reserved registration ended: the name is registered now, or free again.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Registered {
    pub(crate) name: String,
    pub(crate) created: bool,
}

/// Read the registered names from the store again (every [`REFRESH_EVERY`], and on SIGHUP):
/// names the operator registered are reserved from then on, and users logged in to an account
/// that is gone are logged out.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct RefreshAccounts;

/// The registered names, as the store listed them, or why it did not.
#[derive(Message)]
#[rtype(result = "()")]
struct AccountKeys(Result<Vec<String>, String>);

/// The connection `conn` is gone or going: drop it from every room and tell the others.
/// Harmless for a connection that never logged in.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Disconnect {
    pub(crate) conn: ConnId,
    /// Why, for the log.
    pub(crate) cause: CloseCause,
}

/// Looks up the outbox of the user called `name`, for a session to write to directly. If
/// nobody by that name is online and `offline` is given (a direct message), it is handed to the
/// store to be kept for the account of that name, if there is one.
#[derive(Message)]
#[rtype(result = "Resolved")]
pub(crate) struct Resolve {
    pub(crate) name: String,
    pub(crate) offline: Option<NewMessage>,
}

/// Where a direct message goes, as [`Resolve`] found out.
#[derive(MessageResponse)]
pub(crate) enum Resolved {
    /// The user is online: write to this outbox.
    Online(Outbox),
    /// The user is offline and the store is asked to keep the message for their account. The
    /// request is queued to the store's writer *here*, in the `ChatServer`'s order: a login
    /// by that name, handled after this, starts its replay after this request in the writer's
    /// queue, so it sees the message if the answer is `queued`.
    Queueing(Queueing),
    /// Nobody by that name is online, and there is no store to keep the message.
    Unknown,
}

/// `who`: the sorted list of users is written to `conn`.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Who {
    pub(crate) conn: ConnId,
}

/// `rooms`: the sorted list of rooms is written to `conn`.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ListRooms {
    pub(crate) conn: ConnId,
}

/// `names|ROOM`: the room's members are written to `conn`, member or not.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Names {
    pub(crate) conn: ConnId,
    pub(crate) room: String,
}

/// `join|ROOM` (the room name already checked to be valid).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Join {
    pub(crate) conn: ConnId,
    pub(crate) room: String,
}

/// `leave|ROOM`
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Leave {
    pub(crate) conn: ConnId,
    pub(crate) room: String,
}

/// `say|ROOM|TEXT`
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Say {
    pub(crate) conn: ConnId,
    pub(crate) room: String,
    pub(crate) text: String,
    /// When the session read the line, for the delivery-time metric.
    pub(crate) read_at: Instant,
}

/// `history|#ROOM|…`: whether `conn` is in `room` now, since only members may read a room's
/// history.
#[derive(Message)]
#[rtype(result = "bool")]
pub(crate) struct IsMember {
    pub(crate) conn: ConnId,
    pub(crate) room: String,
}

/// The process is shutting down: every connection is about to go, so stop telling the rest
/// about each departure (with presence on, that would be quadratic in the number of users).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Stopping;

struct User {
    name: Arc<str>,
    key: Key,
    outbox: Outbox,
    /// Order of login, to list peers oldest first.
    since: u64,
    /// Folded names of the rooms this user is in.
    rooms: Vec<Key>,
    /// How the user logged in; an account's owner is told if it is removed.
    identity: Identity,
}

struct Room {
    /// The name as its first member spelled it.
    name: Arc<str>,
    /// By folded user name, so iteration is the sorted member list.
    members: BTreeMap<Key, Member>,
}

struct Member {
    name: Arc<str>,
    outbox: Outbox,
}

/// The actor that owns the user map and the rooms.
pub(crate) struct ChatServer {
    presence: Presence,
    /// Rooms one user may be in, and rooms in all (`limits.rooms_per_user`, `server.max_rooms`).
    rooms_per_user: usize,
    max_rooms: usize,
    users: HashMap<ConnId, User>,
    by_name: HashMap<Key, ConnId>,
    /// Logged-in connections by login order, kept only when presence is on (for the peer list).
    online: BTreeMap<u64, ConnId>,
    next_login: u64,
    rooms: BTreeMap<Key, Room>,
    stopping: bool,
    /// Where each `say` is kept once delivered, if anywhere.
    store: Option<StoreHandle>,
    /// `auth.mode`: in `accounts` mode, no guest may log in.
    mode: AuthMode,
    /// The registered names (folded), as last read from the store: reserved for their owners.
    registered: HashSet<Key>,
    /// Names whose registration is under way: reserved too, and kept through a refresh.
    registering: HashSet<Key>,
    /// A refresh of `registered` is under way.
    refreshing: bool,
    /// The last refresh failed (and said so).
    refresh_failing: bool,
    /// Names registered since the refresh under way began, which its answer may predate.
    registered_since_refresh: HashSet<Key>,
    /// The server's metrics: logins, users and rooms are counted here, where they change.
    metrics: Arc<Metrics>,
}

impl ChatServer {
    pub(crate) fn new(
        settings: &Settings,
        store: Option<StoreHandle>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            presence: settings.server.presence,
            rooms_per_user: settings.limits.rooms_per_user,
            max_rooms: settings.server.max_rooms,
            users: HashMap::new(),
            by_name: HashMap::new(),
            online: BTreeMap::new(),
            next_login: 0,
            rooms: BTreeMap::new(),
            stopping: false,
            store,
            mode: settings.auth.mode,
            registered: HashSet::new(),
            registering: HashSet::new(),
            refreshing: false,
            refresh_failing: false,
            registered_since_refresh: HashSet::new(),
            metrics,
        }
    }

    /// Whether `key` is registered, or being registered.
    fn reserved(&self, key: &str) -> bool {
        self.registered.contains(key) || self.registering.contains(key)
    }

    /// Asks the store for the registered names; `AccountKeys` brings them back. One at a time.
    fn refresh(&mut self, ctx: &mut Context<Self>) {
        let Some(store) = self.store.clone() else {
            return;
        };
        if std::mem::replace(&mut self.refreshing, true) {
            return;
        }
        self.registered_since_refresh.clear();
        let me = ctx.address();
        ctx.spawn(wrap_future(async move {
            let keys = store.account_keys(STORE_WAIT).await;
            me.do_send(AccountKeys(keys.map_err(|error| error.to_string())));
        }));
    }

    /// Encodes `event` once and queues that one copy on each of `outboxes` (shared, not
    /// copied: see [`Outbox::send_shared`]): the one fan-out, for presence notices and room
    /// lines alike. A closed outbox belongs to a user whose `Disconnect` is on its way, so a
    /// failure is not this sender's concern.
    fn fan_out<'o>(event: &Event<'_>, outboxes: impl Iterator<Item = &'o Outbox>) {
        let line = event.to_line().freeze();
        let verb = event.verb();
        for outbox in outboxes {
            let _ = outbox.send_shared(&line, verb);
        }
    }

    /// Queues `event` for every logged-in user except `except`.
    fn broadcast(&self, event: &Event<'_>, except: ConnId) {
        let others = self.users.iter().filter(move |(&conn, _)| conn != except);
        Self::fan_out(event, others.map(|(_, user)| &user.outbox));
    }

    /// Queues `event` for every member of `room` except the user whose folded name is `except`.
    fn tell_room(room: &Room, event: &Event<'_>, except: &str) {
        let others = room
            .members
            .iter()
            .filter(move |(key, _)| &***key != except);
        Self::fan_out(event, others.map(|(_, member)| &member.outbox));
    }

    /// Takes `user` out of the room `room_key`: an emptied room is deleted, otherwise its other
    /// members are told (unless `quiet`). Returns the room's name, if the room existed.
    fn remove_from_room(
        rooms: &mut BTreeMap<Key, Room>,
        room_key: &Key,
        user: &User,
        quiet: bool,
    ) -> Option<Arc<str>> {
        let room = rooms.get_mut(room_key)?;
        room.members.remove(&user.key);
        let name = room.name.clone();
        if room.members.is_empty() {
            rooms.remove(room_key);
        } else if !quiet {
            let event = Event::RoomLeft {
                room: &name,
                name: &user.name,
            };
            Self::tell_room(room, &event, &user.key);
        }
        Some(name)
    }

    /// Replies to `conn`, if it is still logged in.
    fn reply(&self, conn: ConnId, event: &Event<'_>) {
        if let Some(user) = self.users.get(&conn) {
            let _ = user.outbox.send(event);
        }
    }
}

impl Actor for ChatServer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Every session has at most one request in flight, so the mailbox is bounded by the
        // number of connections; the default capacity of 16 would only add parking overhead.
        // (In actix, a capacity of 0 means unbounded.)
        ctx.set_mailbox_capacity(0);
        let Some(store) = self.store.clone() else {
            return;
        };
        // No login is handled before the registered names are known: a registered name must
        // never be handed to a guest.
        ctx.wait(
            wrap_future(async move { store.account_keys(STORE_WAIT).await }).map(
                |keys, server: &mut ChatServer, _| match keys {
                    Ok(keys) => {
                        server.registered = keys.into_iter().map(Key::from).collect();
                        info!("{} registered names", server.registered.len());
                    }
                    Err(error) => {
                        server.refresh_failing = true;
                        warn!(
                            "cannot read the registered names from the store: {error}; trying \
                             again in {} s",
                            REFRESH_EVERY.as_secs()
                        );
                    }
                },
            ),
        );
        ctx.run_interval(REFRESH_EVERY, |server, ctx| server.refresh(ctx));
    }
}

impl Handler<AccountKeys> for ChatServer {
    type Result = ();

    fn handle(&mut self, msg: AccountKeys, _: &mut Context<Self>) {
        self.refreshing = false;
        let keys = match msg.0 {
            Ok(keys) => {
                if std::mem::take(&mut self.refresh_failing) {
                    info!("the registered names can be read from the store again");
                }
                keys
            }
            Err(error) => {
                // Said once per outage, not every few seconds; what we had is kept.
                if !std::mem::replace(&mut self.refresh_failing, true) {
                    warn!("cannot read the registered names from the store: {error}");
                }
                return;
            }
        };
        self.registered = keys.into_iter().map(Key::from).collect();
        self.registered
            .extend(self.registered_since_refresh.drain());
        for user in self.users.values() {
            if let Identity::Account(session) = &user.identity {
                if !self.reserved(&user.key) {
                    info!(
                        "the account {} no longer exists: logging its user out",
                        user.name
                    );
                    session.do_send(AccountRemoved);
                }
            }
        }
    }
}

impl Handler<RefreshAccounts> for ChatServer {
    type Result = ();

    fn handle(&mut self, _: RefreshAccounts, ctx: &mut Context<Self>) {
        self.refresh(ctx);
    }
}

impl Handler<Reserve> for ChatServer {
    type Result = Result<(), ErrorKind>;

    fn handle(&mut self, msg: Reserve, _: &mut Context<Self>) -> Self::Result {
        let key = fold(&msg.name);
        let online = self.by_name.get(&key);
        if (online.is_some() && online != msg.guest.as_ref()) || self.reserved(&key) {
            return Err(ErrorKind::NameTaken);
        }
        self.registering.insert(key);
        Ok(())
    }
}

impl Handler<Upgrade> for ChatServer {
    type Result = Option<Arc<str>>;

    fn handle(&mut self, msg: Upgrade, _: &mut Context<Self>) -> Self::Result {
        let user = self.users.get_mut(&msg.conn)?;
        user.identity = Identity::Account(msg.session);
        let _ = user.outbox.send(&Event::LoggedIn(&user.name));
        info!("{} is logged in to the account now", user.name);
        Some(user.name.clone())
    }
}

impl Handler<Registered> for ChatServer {
    type Result = ();

    fn handle(&mut self, msg: Registered, _: &mut Context<Self>) {
        let key = fold(&msg.name);
        self.registering.remove(&key);
        if msg.created {
            info!("{} registered", msg.name);
            self.registered.insert(key.clone());
            if self.refreshing {
                self.registered_since_refresh.insert(key);
            }
        }
    }
}

impl Handler<Login> for ChatServer {
    type Result = Option<Arc<str>>;

    fn handle(&mut self, msg: Login, _: &mut Context<Self>) -> Self::Result {
        let key = fold(&msg.name);
        if self.by_name.contains_key(&key) {
            self.metrics.login_failed();
            let _ = msg
                .outbox
                .send(&Event::Error(ErrorKind::NameTaken, &msg.name));
            return None;
        }
        if matches!(msg.kind, Identity::Guest)
            && (self.mode == AuthMode::Accounts || self.reserved(&key))
        {
            self.metrics.login_failed();
            let _ = msg
                .outbox
                .send(&Event::Error(ErrorKind::PasswordRequired, &msg.name));
            return None;
        }
        let kind = match msg.kind {
            Identity::Guest => LoginKind::Guest,
            Identity::Account(_) => LoginKind::Account,
        };
        let name: Arc<str> = msg.name.into();
        let mut greeting = Event::LoggedIn(&name).to_line();
        let mut peers = 0;
        if self.presence == Presence::All {
            for conn in self.online.values() {
                if let Some(peer) = self.users.get(conn) {
                    Event::Online(&peer.name).encode(&mut greeting);
                    peers += 1;
                }
            }
            self.broadcast(&Event::Online(&name), msg.conn);
        }
        // Counted before the greeting is queued: a client that has read `ok|login` finds its
        // login counted (the user joins the map just below).
        self.metrics.logged_in(self.users.len() + 1);
        self.metrics.events_sent(EventVerb::Ok, 1);
        self.metrics.events_sent(EventVerb::Login, peers);
        // If this fails the session is already closing; its Disconnect follows.
        let _ = msg.outbox.send_line(&greeting);

        let since = self.next_login;
        self.next_login += 1;
        if self.presence == Presence::All {
            self.online.insert(since, msg.conn);
        }
        self.by_name.insert(key.clone(), msg.conn);
        self.users.insert(
            msg.conn,
            User {
                name: name.clone(),
                key,
                outbox: msg.outbox,
                since,
                rooms: Vec::new(),
                identity: msg.kind,
            },
        );
        let how = match kind {
            LoginKind::Guest => "",
            LoginKind::Account => " to the account",
        };
        info!(
            "{name} logged in{how} from {} ({} online)",
            msg.peer,
            self.users.len()
        );
        Some(name)
    }
}

impl Handler<Disconnect> for ChatServer {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, _: &mut Context<Self>) {
        let Some(user) = self.users.remove(&msg.conn) else {
            return;
        };
        self.by_name.remove(&user.key);
        self.online.remove(&user.since);
        for room_key in &user.rooms {
            Self::remove_from_room(&mut self.rooms, room_key, &user, self.stopping);
        }
        if self.presence == Presence::All && !self.stopping {
            self.broadcast(&Event::Offline(&user.name), msg.conn);
        }
        self.metrics.set_users(self.users.len());
        self.metrics.set_rooms(self.rooms.len());
        info!(
            "{} logged out: {} ({} online)",
            user.name,
            msg.cause,
            self.users.len()
        );
    }
}

impl Handler<Resolve> for ChatServer {
    type Result = Resolved;

    fn handle(&mut self, msg: Resolve, _: &mut Context<Self>) -> Self::Result {
        let key = fold(&msg.name);
        let online = self.by_name.get(&key).and_then(|conn| self.users.get(conn));
        match (online, &self.store, msg.offline) {
            (Some(user), _, _) => Resolved::Online(user.outbox.clone()),
            // Only a registered name is worth asking the store about (which still checks, in
            // the statement that stores the message): a typo costs no round trip, and gets
            // `no-such-user` even while the store is down.
            (None, Some(store), Some(message)) if self.reserved(&key) => {
                Resolved::Queueing(store.queue(message))
            }
            (None, _, _) => Resolved::Unknown,
        }
    }
}

impl Handler<Who> for ChatServer {
    type Result = ();

    fn handle(&mut self, msg: Who, _: &mut Context<Self>) {
        let mut users: Vec<&User> = self.users.values().collect();
        users.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        let names = users.iter().map(|user| &*user.name).collect();
        self.reply(msg.conn, &Event::Users(names));
    }
}

impl Handler<ListRooms> for ChatServer {
    type Result = ();

    fn handle(&mut self, msg: ListRooms, _: &mut Context<Self>) {
        let names = self.rooms.values().map(|room| &*room.name).collect();
        self.reply(msg.conn, &Event::Rooms(names));
    }
}

impl Handler<Names> for ChatServer {
    type Result = ();

    fn handle(&mut self, msg: Names, _: &mut Context<Self>) {
        let event = match self.rooms.get(&fold(&msg.room)) {
            Some(room) => Event::Members {
                room: &room.name,
                names: room.members.values().map(|m| &*m.name).collect(),
            },
            None => Event::Error(ErrorKind::NoSuchRoom, &msg.room),
        };
        self.reply(msg.conn, &event);
    }
}

impl Handler<Join> for ChatServer {
    type Result = ();

    fn handle(&mut self, msg: Join, _: &mut Context<Self>) {
        let Some(user) = self.users.get_mut(&msg.conn) else {
            return;
        };
        let room_key = fold(&msg.room);
        if user.rooms.contains(&room_key) {
            let _ = user
                .outbox
                .send(&Event::Error(ErrorKind::AlreadyInRoom, &msg.room));
            return;
        }
        // Both limits keep the server's memory, and every list of rooms, bounded.
        if user.rooms.len() >= self.rooms_per_user
            || (self.rooms.len() >= self.max_rooms && !self.rooms.contains_key(&room_key))
        {
            let _ = user
                .outbox
                .send(&Event::Error(ErrorKind::TooManyRooms, &msg.room));
            return;
        }
        user.rooms.push(room_key.clone());
        let room = self.rooms.entry(room_key).or_insert_with(|| Room {
            name: msg.room.as_str().into(),
            members: BTreeMap::new(),
        });
        Self::tell_room(
            room,
            &Event::RoomJoined {
                room: &room.name,
                name: &user.name,
            },
            &user.key,
        );
        room.members.insert(
            user.key.clone(),
            Member {
                name: user.name.clone(),
                outbox: user.outbox.clone(),
            },
        );
        let mut reply = Event::Joined(&room.name).to_line();
        let names = room.members.values().map(|m| &*m.name).collect();
        Event::Members {
            room: &room.name,
            names,
        }
        .encode(&mut reply);
        self.metrics.set_rooms(self.rooms.len());
        self.metrics.events_sent(EventVerb::Ok, 1);
        self.metrics.events_sent(EventVerb::Members, 1);
        let _ = user.outbox.send_line(&reply);
    }
}

impl Handler<Leave> for ChatServer {
    type Result = ();

    fn handle(&mut self, msg: Leave, _: &mut Context<Self>) {
        let Some(user) = self.users.get_mut(&msg.conn) else {
            return;
        };
        let room_key = fold(&msg.room);
        let Some(index) = user.rooms.iter().position(|r| *r == room_key) else {
            let _ = user
                .outbox
                .send(&Event::Error(ErrorKind::NotInRoom, &msg.room));
            return;
        };
        user.rooms.swap_remove(index);
        let left = Self::remove_from_room(&mut self.rooms, &room_key, user, false);
        self.metrics.set_rooms(self.rooms.len());
        if let Some(room) = left {
            let _ = user.outbox.send(&Event::Left(&room));
        }
    }
}

impl Handler<Say> for ChatServer {
    type Result = ();

    fn handle(&mut self, msg: Say, _: &mut Context<Self>) {
        let Some(user) = self.users.get(&msg.conn) else {
            return;
        };
        let room = self
            .rooms
            .get(&fold(&msg.room))
            .filter(|room| room.members.contains_key(&user.key));
        let Some(room) = room else {
            let _ = user
                .outbox
                .send(&Event::Error(ErrorKind::NotInRoom, &msg.room));
            return;
        };
        let event = Event::Say {
            room: &room.name,
            from: &user.name,
            text: &msg.text,
        };
        Self::tell_room(room, &event, &user.key);
        self.metrics.delivered(Delivered::Say, msg.read_at);
        if let Some(store) = &self.store {
            store.keep(NewMessage::room(&room.name, &user.name, &msg.text));
        }
    }
}

impl Handler<IsMember> for ChatServer {
    type Result = bool;

    fn handle(&mut self, msg: IsMember, _: &mut Context<Self>) -> bool {
        self.users
            .get(&msg.conn)
            .is_some_and(|user| user.rooms.contains(&fold(&msg.room)))
    }
}

impl Handler<Stopping> for ChatServer {
    type Result = ();

    fn handle(&mut self, _: Stopping, _: &mut Context<Self>) {
        self.stopping = true;
    }
}
