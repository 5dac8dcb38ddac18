//! Pages of messages read from chunks: the one place that applies a
//! [`MessageQuery`] (cursor, order, time window, limit) to the chunks a
//! store reads, so that every store pages the same way.

use convo_schema::Message;

use crate::cursor;
use crate::ports::{MessageQuery, Order, Page, StoreError, Window};

/// Feeds chunks in reading order (ascending or descending by their first
/// index, as the query's order says) and collects one page.
pub struct MessagePager<'q> {
    q: &'q MessageQuery,
    scope: String,
    from: Option<(u64, u64)>,
    items: Vec<Message>,
    next: Option<(u64, u64)>,
    done: bool,
    /// The end index of the first chunk fed and the largest end seen.
    first_end: Option<u64>,
    max_end: u64,
}

impl<'q> MessagePager<'q> {
    /// `scope` binds cursors to the conversation they were issued for.
    pub fn new(q: &'q MessageQuery, scope: String) -> Result<Self, StoreError> {
        let from = q.cursor.as_deref().map(|c| cursor::decode_at(&scope, c)).transpose()?;
        Ok(Self {
            q,
            scope,
            from,
            items: Vec::new(),
            next: None,
            done: false,
            first_end: None,
            max_end: 0,
        })
    }

    /// The first index of the chunk to start reading at (inclusive): the
    /// lowest for an ascending read, the highest for a descending one;
    /// `None` reads from the start (ascending) or the newest (descending).
    pub fn start_chunk(&self) -> Option<u64> {
        self.from.map(|(chunk, _)| chunk)
    }

    pub fn done(&self) -> bool {
        self.done
    }

    /// Messages still wanted, for sizing the next read.
    pub fn wanted(&self) -> usize {
        self.q.limit + 1 - self.items.len().min(self.q.limit)
    }

    /// Takes one chunk's messages (in index order); returns whether more
    /// chunks are wanted.
    pub fn push(&mut self, first_index: u64, messages: Vec<Message>) -> bool {
        if self.done {
            return false;
        }
        let end = first_index + messages.len() as u64;
        self.first_end.get_or_insert(end);
        self.max_end = self.max_end.max(end);
        let ordered: Box<dyn Iterator<Item = Message>> = match self.q.order {
            Order::Asc => Box::new(messages.into_iter()),
            Order::Desc => Box::new(messages.into_iter().rev()),
        };
        for m in ordered {
            if let Some((_, at)) = self.from {
                let before = match self.q.order {
                    Order::Asc => m.message_index < at,
                    Order::Desc => m.message_index > at,
                };
                if before {
                    continue;
                }
            }
            match self.q.window(&m) {
                Window::Inside => {}
                Window::Skip => continue,
                Window::Past => {
                    self.done = true;
                    return false;
                }
            }
            if self.items.len() == self.q.limit {
                self.next = Some((first_index, m.message_index));
                self.done = true;
                return false;
            }
            self.items.push(m);
        }
        true
    }

    /// Whether what was read shows fewer messages than the query knows the
    /// conversation holds (`known_count`) where it reached the newest
    /// message: an eventually consistent read that lagged. `exhausted`:
    /// the store found no further chunk in the reading direction.
    pub fn lagged(&self, exhausted: bool) -> bool {
        let Some(known) = self.q.known_count else {
            return false;
        };
        match (self.q.order, self.from) {
            (Order::Desc, None) => self.first_end.unwrap_or(0) < known,
            (Order::Asc, _) => exhausted && !self.done && self.max_end < known,
            (Order::Desc, Some(_)) => false,
        }
    }

    pub fn finish(self) -> Page<Message> {
        Page {
            items: self.items,
            next_cursor: self
                .next
                .map(|(chunk, index)| cursor::encode_at(&self.scope, chunk, index)),
        }
    }
}
